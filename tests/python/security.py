"""kafka-python and confluent-kafka against kafkabox's SASL (and TLS) listeners.

Usage: security.py CLIENT ACTION BOOTSTRAP PROTOCOL MECHANISM USER PASSWORD CAFILE [ARGS...]
  CLIENT   kp (kafka-python) or ck (confluent-kafka)
  ACTION   roundtrip TOPIC N      produce N records, read them back with a consumer group
           refused                connect; expect the broker to refuse the authentication
           denied-produce TOPIC   produce one record; expect TOPIC_AUTHORIZATION_FAILED
           denied-consume TOPIC   consume; expect TOPIC_AUTHORIZATION_FAILED
           topic-create TOPIC    (ck) CreateTopics
           acls-create PRINCIPAL TOPIC   (ck) allow PRINCIPAL WRITE+READ on TOPIC, READ on every group
           acls-describe         (ck) print every ACL binding
           acls-delete PRINCIPAL (ck) delete PRINCIPAL's bindings
           scram-upsert NAME PW  (ck) AlterUserScramCredentials: set NAME's SCRAM-SHA-512 password
           scram-describe        (ck) DescribeUserScramCredentials of every user
           scram-delete NAME     (ck) delete NAME's SCRAM-SHA-512 credential
Prints one JSON object on stdout; exits non-zero when what was expected did not happen.
"""
import json
import logging
import sys
import time
import uuid


def kp_config(bootstrap, protocol, mechanism, user, password, cafile):
    c = dict(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )
    if "SSL" in protocol:
        c["ssl_cafile"] = cafile
        c["ssl_check_hostname"] = True
    return c


def ck_config(bootstrap, protocol, mechanism, user, password, cafile):
    c = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if "SSL" in protocol:
        c["ssl.ca.location"] = cafile
    return c


class Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def kp(action, conf, args):
    from kafka import KafkaConsumer, KafkaProducer, errors

    if action == "roundtrip":
        topic, n = args[0], int(args[1])
        p = KafkaProducer(**conf, acks="all")
        offsets = [p.send(topic, f"kp-{i}".encode()).get(timeout=30).offset for i in range(n)]
        p.close()
        c = KafkaConsumer(topic, **conf, group_id=f"kp-{uuid.uuid4()}",
                          auto_offset_reset="earliest", consumer_timeout_ms=20000)
        got = []
        deadline = time.time() + 30
        while len(got) < n and time.time() < deadline:
            for batch in c.poll(timeout_ms=1000).values():
                got.extend(r.value.decode() for r in batch)
        c.commit()
        c.close()
        return {"offsets": offsets, "read": got}
    if action == "refused":
        # The producer retries its bootstrap until max_block_ms; the answer is read off
        # kafka-python's log as soon as the broker's refusal shows there.
        import os
        import threading
        cap = Captured()
        logging.getLogger("kafka").addHandler(cap)
        logging.getLogger("kafka").setLevel(logging.DEBUG)
        result = {}

        def connect():
            try:
                KafkaProducer(**conf, max_block_ms=20000).close()
                result["error"] = None
            except Exception as e:  # the producer cannot bootstrap
                result["error"] = type(e).__name__

        threading.Thread(target=connect, daemon=True).start()
        deadline = time.time() + 25
        while time.time() < deadline and "error" not in result:
            auth = [l for l in list(cap.lines) if "SaslAuthenticationFailedError" in l]
            if auth:
                print(json.dumps({"error": "refused", "auth_failures": auth[:3]}), flush=True)
                os._exit(0)
            time.sleep(0.05)
        return {"error": result.get("error"), "auth_failures": []}
    if action == "denied-produce":
        p = KafkaProducer(**conf, acks="all", retries=0)
        try:
            p.send(args[0], b"x").get(timeout=30)
            return {"error": None}
        except errors.TopicAuthorizationFailedError as e:
            return {"error": "TOPIC_AUTHORIZATION_FAILED", "message": str(e)}
        except Exception as e:
            return {"error": type(e).__name__, "message": str(e)}
    raise SystemExit(f"unknown kafka-python action {action}")


def ck(action, conf, args):
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

    errors_seen = []

    def on_error(e):
        errors_seen.append({"name": e.name(), "code": e.code(), "str": e.str()})

    if action == "roundtrip":
        topic, n = args[0], int(args[1])
        p = Producer({**conf, "acks": "all", "enable.idempotence": True, "error_cb": on_error})
        offsets = []

        def on_delivery(err, msg):
            if err is None:
                offsets.append(msg.offset())
            else:
                errors_seen.append({"name": err.name(), "str": err.str()})

        for i in range(n):
            p.produce(topic, f"ck-{i}".encode(), on_delivery=on_delivery)
        p.flush(30)
        c = Consumer({**conf, "group.id": f"ck-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                      "error_cb": on_error})
        c.subscribe([topic])
        got = []
        deadline = time.time() + 30
        while len(got) < n and time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m.value().decode())
        c.commit(asynchronous=False)
        c.close()
        return {"offsets": sorted(offsets), "read": got, "errors": errors_seen}
    if action == "refused":
        p = Producer({**conf, "error_cb": on_error})
        deadline = time.time() + 15
        while not errors_seen and time.time() < deadline:
            p.poll(0.5)
        try:
            p.list_topics(timeout=2)
            listed = True
        except KafkaException:
            listed = False
        return {"errors": errors_seen, "listed": listed}
    if action == "denied-consume":
        c = Consumer({**conf, "group.id": f"ck-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                      "error_cb": on_error})
        c.subscribe([args[0]])
        deadline = time.time() + 20
        found = None
        while found is None and time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is not None:
                found = {"name": m.error().name(), "str": m.error().str()}
        c.close()
        return {"error": found}

    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    a = AdminClient(conf)
    if action == "topic-create":
        from confluent_kafka.admin import NewTopic
        for f in a.create_topics([NewTopic(args[0], 1)]).values():
            f.result(timeout=20)
        return {"created": args[0]}
    if action == "acls-create":
        principal, topic = args
        bindings = [
            AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.READ, AclPermissionType.ALLOW),
            AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, principal, "*",
                       AclOperation.READ, AclPermissionType.ALLOW),
        ]
        for f in a.create_acls(bindings).values():
            f.result(timeout=20)
        return {"created": len(bindings)}
    if action == "acls-describe":
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
        got = a.describe_acls(flt).result(timeout=20)
        return {"acls": sorted(f"{b.restype.name}:{b.name}:{b.resource_pattern_type.name}:"
                               f"{b.principal}:{b.host}:{b.operation.name}:{b.permission_type.name}"
                               for b in got)}
    if action == "acls-delete":
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, args[0], None,
                               AclOperation.ANY, AclPermissionType.ANY)
        deleted = []
        for f in a.delete_acls([flt]).values():
            deleted.extend(f.result(timeout=20))
        return {"deleted": len(deleted)}
    if action == "scram-upsert":
        name, pw = args
        up = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), pw.encode())
        for f in a.alter_user_scram_credentials([up]).values():
            f.result(timeout=20)
        return {"upserted": name}
    if action == "scram-describe":
        res = a.describe_user_scram_credentials().result(timeout=20)
        return {"users": {u: sorted(f"{i.mechanism.name}:{i.iterations}"
                                    for i in d.scram_credential_infos)
                          for u, d in res.items()}}
    if action == "scram-delete":
        d = UserScramCredentialDeletion(args[0], ScramMechanism.SCRAM_SHA_512)
        for f in a.alter_user_scram_credentials([d]).values():
            f.result(timeout=20)
        return {"deleted": args[0]}
    raise SystemExit(f"unknown confluent-kafka action {action}")


def main():
    client, action, bootstrap, protocol, mechanism, user, password, cafile, *args = sys.argv[1:]
    if client == "kp":
        out = kp(action, kp_config(bootstrap, protocol, mechanism, user, password, cafile), args)
    else:
        out = ck(action, ck_config(bootstrap, protocol, mechanism, user, password, cafile), args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

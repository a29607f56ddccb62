"""Broker configs with confluent-kafka's AdminClient (IncrementalAlterConfigs, DescribeConfigs)
and kafka-python's (AlterConfigs): every name Kafka accepts on the broker resource is accepted
as Kafka accepts it. Every check raises on failure; the last line is a JSON summary.

Usage: broker_configs.py HOST:PORT alter|describe
"""
import json
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)

addr, mode = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": addr})
summary = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def incremental(name, entries):
    """IncrementalAlterConfigs on broker `name`: None or (error name, message)."""
    res = ConfigResource(ResourceType.BROKER, name, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([res])[res].result(30)
        return None
    except KafkaException as e:
        err = e.args[0]
        return (err.name(), err.str())


def describe():
    res = ConfigResource(ResourceType.BROKER, "0")
    return admin.describe_configs([res])[res].result(30)


def ConfigSource_name(source):
    from confluent_kafka.admin import ConfigSource
    return ConfigSource(source).name


def op(name, value, kind=AlterConfigOpType.SET):
    return ConfigEntry(name, value, incremental_operation=kind)


if mode == "alter":
    # A per-broker Kafka config kafkabox has no use for: accepted and stored.
    check(incremental("0", [op("sasl.kerberos.min.time.before.relogin", "120000")]) is None,
          "sasl.kerberos.min.time.before.relogin refused")
    # A cluster-wide one (for this broker: the Python clients cannot name the cluster default;
    # tests/broker_configs.rs does, with raw requests).
    check(incremental("0", [op("num.network.threads", "6")]) is None, "num.network.threads refused")
    # Its type is checked as Kafka checks it.
    err = incremental("0", [op("num.io.threads", "many")])
    check(err is not None and err[0] == "INVALID_CONFIG" and "INT" in err[1], f"bad int: {err}")
    # A read-only one: Kafka's INVALID_REQUEST.
    err = incremental("0", [op("log.dirs", "/elsewhere")])
    check(err is not None and err[0] == "INVALID_REQUEST"
          and "Cannot update these configs dynamically: Set(log.dirs)" in err[1], f"log.dirs: {err}")
    # One kafkabox reads at start-up only: refused, saying so.
    err = incremental("0", [op("max.connections", "5")])
    check(err is not None and err[0] == "INVALID_REQUEST" and "start-up" in err[1], f"max.connections: {err}")
    # A custom name (Kafka stores unknown broker configs for plugins).
    check(incremental("0", [op("my.plugin.setting", "secret")]) is None, "custom name refused")
    # APPEND to a list, applied at once as every topic's default cleanup.policy.
    check(incremental("0", [op("log.cleanup.policy", "compact", AlterConfigOpType.APPEND)]) is None,
          "append refused")
    err = incremental("0", [op("num.io.threads", "1", AlterConfigOpType.APPEND)])
    check(err is not None and err[0] == "INVALID_CONFIG", f"append to an int: {err}")
    # kafka-python's AlterConfigs (not incremental) too.
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType as KpType
    kp = KafkaAdminClient(bootstrap_servers=addr)
    out = kp.alter_configs([KpResource(KpType.BROKER, "0", configs={
        "background.threads": "12", "my.plugin.setting": "secret"})], raise_on_unknown=False)
    check(out == {"broker": {"0": "OK"}}, f"kafka-python AlterConfigs: {out}")
    kp.close()
    summary["altered"] = True

d = describe()


def get(name, attr="value"):
    e = d.get(name)
    return None if e is None else getattr(e, attr)


summary["relogin"] = get("sasl.kerberos.min.time.before.relogin")
summary["relogin_source"] = ConfigSource_name(get("sasl.kerberos.min.time.before.relogin", "source"))
summary["background_threads"] = get("background.threads")
summary["num_io_threads"] = get("num.io.threads")
summary["num_network_threads"] = get("num.network.threads")
summary["log_dirs_read_only"] = get("log.dirs", "is_read_only")
summary["custom_sensitive"] = get("my.plugin.setting", "is_sensitive")
summary["custom_value"] = get("my.plugin.setting")
summary["cleanup_policy"] = get("log.cleanup.policy")
summary["names"] = len(d)
print(json.dumps(summary))

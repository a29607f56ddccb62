//! CreateTopics and DeleteTopics through librdkafka's C API (`rd_kafka_CreateTopics`,
//! `rd_kafka_DeleteTopics`), so that a refusal carries the broker's error message, which the
//! rdkafka crate's [`rdkafka::admin::AdminClient`] drops (it keeps only the code). Blocking:
//! call it off the async runtime. Works with any client settings (TLS, SASL), since the
//! request goes through the caller's own librdkafka client.

use std::ffi::{c_char, c_int, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

/// How one topic of the request ended: `None`, or the broker's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    pub topic: String,
    pub error: Option<(RDKafkaErrorCode, String)>,
}

/// The request as a whole failed (the cluster unreachable within the timeout, bad arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: RDKafkaErrorCode,
    pub message: String,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for AdminError {}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic<'a> {
    pub name: &'a str,
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i32,
    pub configs: &'a [(String, String)],
}

fn invalid(message: String) -> AdminError {
    AdminError {
        code: RDKafkaErrorCode::InvalidArgument,
        message,
    }
}

fn c_string(s: &str) -> Result<CString, AdminError> {
    CString::new(s).map_err(|_| invalid(format!("'{s}' contains a NUL byte")))
}

fn millis(d: Duration) -> c_int {
    c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX)
}

fn text(errbuf: &[c_char]) -> String {
    // SAFETY: librdkafka writes a NUL-terminated string into the buffer it was given, and
    // the buffer starts zeroed, so it holds a NUL even if nothing was written.
    #[allow(unsafe_code)]
    unsafe { CStr::from_ptr(errbuf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The admin options of one request, destroyed on drop.
struct Options(*mut rd::rd_kafka_AdminOptions_t);

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new and destroyed once, here.
        #[allow(unsafe_code)]
        unsafe {
            rd::rd_kafka_AdminOptions_destroy(self.0)
        }
    }
}

/// A result queue of one request, destroyed on drop.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new and destroyed once, here.
        #[allow(unsafe_code)]
        unsafe {
            rd::rd_kafka_queue_destroy(self.0)
        }
    }
}

/// A result event, destroyed on drop.
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: returned by rd_kafka_queue_poll (not null) and destroyed once, here.
        #[allow(unsafe_code)]
        unsafe {
            rd::rd_kafka_event_destroy(self.0)
        }
    }
}

#[allow(unsafe_code)]
fn options<C: ClientContext>(
    client: &Client<C>,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
) -> Result<Options, AdminError> {
    // SAFETY: the client's handle is valid while `client` lives; the options are destroyed
    // by `Options`' drop; errbuf is a writable buffer of the length given.
    unsafe {
        let opts = Options(rd::rd_kafka_AdminOptions_new(client.native_ptr(), op));
        let mut errbuf = [0 as c_char; 512];
        for set in [
            rd::rd_kafka_AdminOptions_set_request_timeout,
            rd::rd_kafka_AdminOptions_set_operation_timeout,
        ] {
            let err = set(opts.0, millis(timeout), errbuf.as_mut_ptr(), errbuf.len());
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(invalid(text(&errbuf)));
            }
        }
        Ok(opts)
    }
}

/// Waits for the request's result event on `queue` (a little longer than its own timeout).
#[allow(unsafe_code)]
fn wait(queue: &Queue, timeout: Duration) -> Result<Event, AdminError> {
    // SAFETY: the queue is valid until `Queue`'s drop; a non-null event is owned by `Event`.
    unsafe {
        let ev = rd::rd_kafka_queue_poll(queue.0, millis(timeout + Duration::from_secs(5)));
        if ev.is_null() {
            return Err(AdminError {
                code: RDKafkaErrorCode::RequestTimedOut,
                message: format!("no answer within {} ms", timeout.as_millis()),
            });
        }
        let ev = Event(ev);
        let err = rd::rd_kafka_event_error(ev.0);
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            let msg = rd::rd_kafka_event_error_string(ev.0);
            let message = if msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            };
            return Err(AdminError {
                code: err.into(),
                message,
            });
        }
        Ok(ev)
    }
}

/// The per-topic outcomes of a result.
///
/// # Safety
/// `topics` points to `n` valid topic results, owned by an event that outlives this call.
#[allow(unsafe_code)]
unsafe fn outcomes(topics: *mut *const rd::rd_kafka_topic_result_t, n: usize) -> Vec<TopicOutcome> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: i < n, per the caller's contract; the strings live as long as the event.
        unsafe {
            let t = *topics.add(i);
            let topic = CStr::from_ptr(rd::rd_kafka_topic_result_name(t))
                .to_string_lossy()
                .into_owned();
            let err = rd::rd_kafka_topic_result_error(t);
            let error = (err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| {
                let msg = rd::rd_kafka_topic_result_error_string(t);
                let message = if msg.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(msg).to_string_lossy().into_owned()
                };
                (RDKafkaErrorCode::from(err), message)
            });
            out.push(TopicOutcome { topic, error });
        }
    }
    out
}

/// CreateTopics: one outcome per topic, each with the broker's message when refused.
#[allow(unsafe_code)]
pub fn create_topics<C: ClientContext>(
    client: &Client<C>,
    topics: &[NewTopic<'_>],
    timeout: Duration,
) -> Result<Vec<TopicOutcome>, AdminError> {
    let opts = options(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS,
        timeout,
    )?;
    // SAFETY: every pointer passed is valid for the call: the client's handle, the CStrings
    // (kept alive until the request is built: librdkafka copies them), the array of new
    // topics (destroyed right after rd_kafka_CreateTopics, which copies what it needs), the
    // options and the queue (destroyed by their drops after the result was read).
    unsafe {
        let rk = client.native_ptr();
        let mut new = Vec::with_capacity(topics.len());
        let mut errbuf = [0 as c_char; 512];
        for t in topics {
            let name = c_string(t.name)?;
            let nt = rd::rd_kafka_NewTopic_new(
                name.as_ptr(),
                t.partitions,
                t.replication_factor,
                errbuf.as_mut_ptr(),
                errbuf.len(),
            );
            if nt.is_null() {
                rd::rd_kafka_NewTopic_destroy_array(new.as_mut_ptr(), new.len());
                return Err(invalid(text(&errbuf)));
            }
            new.push(nt);
            for (k, v) in t.configs {
                let (k, v) = (c_string(k)?, c_string(v)?);
                rd::rd_kafka_NewTopic_set_config(nt, k.as_ptr(), v.as_ptr());
            }
        }
        let queue = Queue(rd::rd_kafka_queue_new(rk));
        rd::rd_kafka_CreateTopics(rk, new.as_mut_ptr(), new.len(), opts.0, queue.0);
        rd::rd_kafka_NewTopic_destroy_array(new.as_mut_ptr(), new.len());
        let ev = wait(&queue, timeout)?;
        let res = rd::rd_kafka_event_CreateTopics_result(ev.0);
        if res.is_null() {
            return Err(invalid("not a CreateTopics result".to_string()));
        }
        let mut n = 0usize;
        let list = rd::rd_kafka_CreateTopics_result_topics(res, &mut n);
        Ok(outcomes(list, n))
    }
}

/// DeleteTopics: one outcome per topic, each with the broker's message when refused.
#[allow(unsafe_code)]
pub fn delete_topics<C: ClientContext>(
    client: &Client<C>,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<TopicOutcome>, AdminError> {
    let opts = options(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETETOPICS,
        timeout,
    )?;
    let cnames = names
        .iter()
        .map(|n| c_string(n))
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: as in create_topics: valid handle, names alive for the call (copied by
    // librdkafka), the array destroyed right after the call, options and queue by their drops.
    unsafe {
        let rk = client.native_ptr();
        let mut del: Vec<*mut rd::rd_kafka_DeleteTopic_t> = cnames
            .iter()
            .map(|n| rd::rd_kafka_DeleteTopic_new(n.as_ptr()))
            .collect();
        let queue = Queue(rd::rd_kafka_queue_new(rk));
        rd::rd_kafka_DeleteTopics(rk, del.as_mut_ptr(), del.len(), opts.0, queue.0);
        rd::rd_kafka_DeleteTopic_destroy_array(del.as_mut_ptr(), del.len());
        let ev = wait(&queue, timeout)?;
        let res = rd::rd_kafka_event_DeleteTopics_result(ev.0);
        if res.is_null() {
            return Err(invalid("not a DeleteTopics result".to_string()));
        }
        let mut n = 0usize;
        let list = rd::rd_kafka_DeleteTopics_result_topics(res, &mut n);
        Ok(outcomes(list, n))
    }
}

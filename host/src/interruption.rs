//! Interruption: EC2 tells us, through EventBridge rules feeding an SQS queue, that an instance
//! is about to go — a spot interruption warning (two minutes), a scheduled change, a capacity
//! reservation reclaim, a stop or termination. Each message is parsed, mapped to what the
//! controller must do (replace the node: launch in parallel, taint, drain, delete), and deleted
//! from the queue. A message that cannot be parsed or is of an unknown kind is logged, counted
//! and deleted; none stops the loop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// What a message says happened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    SpotInterruption,
    RebalanceRecommendation,
    /// `stopping`, `stopped`, `shutting-down` or `terminated` (other states are ignored).
    StateChange(String),
    ScheduledChange,
    CapacityReservationInterruption,
}

impl Kind {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::SpotInterruption => "spot_interruption",
            Kind::RebalanceRecommendation => "rebalance_recommendation",
            Kind::StateChange(_) => "state_change",
            Kind::ScheduledChange => "scheduled_change",
            Kind::CapacityReservationInterruption => "capacity_reservation_interruption",
        }
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: Kind,
    pub instance_ids: Vec<String>,
    /// The event's own time (RFC 3339), when it has one.
    pub time: Option<String>,
}

/// What the controller does about a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch a replacement now, taint, drain and delete the node.
    Replace,
    /// Record it (Event, metric) only.
    Record,
    /// Nothing to do (e.g. a state change to `running`).
    Ignore,
}

/// What a notice asks for; rebalance recommendations are acted on only when configured.
pub fn action(notice: &Notice, act_on_rebalance: bool) -> Action {
    match &notice.kind {
        Kind::SpotInterruption | Kind::ScheduledChange | Kind::CapacityReservationInterruption => {
            Action::Replace
        }
        Kind::RebalanceRecommendation if act_on_rebalance => Action::Replace,
        Kind::RebalanceRecommendation => Action::Record,
        Kind::StateChange(s) => match s.as_str() {
            "stopping" | "stopped" | "shutting-down" | "terminated" => Action::Replace,
            _ => Action::Ignore,
        },
    }
}

/// Why a message was not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an EventBridge event: no detail-type")]
    NoDetailType,
    #[error("unknown detail-type {0:?}")]
    Unknown(String),
    #[error("{detail_type}: {reason}")]
    Malformed { detail_type: String, reason: String },
}

impl ParseError {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::NotJson(_) => "not_json",
            ParseError::NoDetailType => "not_eventbridge",
            ParseError::Unknown(_) => "unknown_kind",
            ParseError::Malformed { .. } => "malformed",
        }
    }
}

/// Parses an EventBridge envelope as AWS documents it for each of the kinds we handle.
pub fn parse(body: &str) -> Result<Notice, ParseError> {
    let v: Value = serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let detail_type = v
        .get("detail-type")
        .and_then(Value::as_str)
        .ok_or(ParseError::NoDetailType)?
        .to_string();
    let malformed = |reason: &str| ParseError::Malformed {
        detail_type: detail_type.clone(),
        reason: reason.into(),
    };
    let detail = v
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or_else(|| malformed("no detail object"))?;
    let time = v.get("time").and_then(Value::as_str).map(str::to_string);
    let instance = |d: &Value| -> Result<Vec<String>, ParseError> {
        let id = d
            .get("instance-id")
            .or_else(|| d.get("instanceId"))
            .and_then(Value::as_str)
            .filter(|id| id.starts_with("i-"))
            .ok_or_else(|| malformed("no instance-id"))?;
        Ok(vec![id.to_string()])
    };
    let (kind, instance_ids) = match detail_type.as_str() {
        "EC2 Spot Instance Interruption Warning" => (Kind::SpotInterruption, instance(detail)?),
        "EC2 Instance Rebalance Recommendation" => {
            (Kind::RebalanceRecommendation, instance(detail)?)
        }
        "EC2 Capacity Reservation Instance Interruption Warning" => {
            (Kind::CapacityReservationInterruption, instance(detail)?)
        }
        "EC2 Instance State-change Notification" => {
            let state = detail
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("no state"))?;
            (Kind::StateChange(state.to_string()), instance(detail)?)
        }
        "AWS Health Event" => {
            if detail.get("service").and_then(Value::as_str) != Some("EC2") {
                return Err(malformed("not an EC2 health event"));
            }
            let category = detail.get("eventTypeCategory").and_then(Value::as_str);
            if category != Some("scheduledChange") {
                return Err(malformed("not a scheduledChange"));
            }
            let ids: Vec<String> = detail
                .get("affectedEntities")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("no affectedEntities"))?
                .iter()
                .filter_map(|e| e.get("entityValue").and_then(Value::as_str))
                .filter(|id| id.starts_with("i-"))
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                return Err(malformed("no instance among affectedEntities"));
            }
            (Kind::ScheduledChange, ids)
        }
        other => return Err(ParseError::Unknown(other.to_string())),
    };
    Ok(Notice {
        kind,
        instance_ids,
        time,
    })
}

/// The EventBridge message EC2 sends for `kind` and `instance`, in the shape AWS documents (for
/// the simulator's `interrupt` step and for tests).
pub fn example_message(kind: &Kind, instance: &str) -> String {
    let (detail_type, detail) = match kind {
        Kind::SpotInterruption => (
            "EC2 Spot Instance Interruption Warning",
            serde_json::json!({"instance-id": instance, "instance-action": "terminate"}),
        ),
        Kind::RebalanceRecommendation => (
            "EC2 Instance Rebalance Recommendation",
            serde_json::json!({"instance-id": instance}),
        ),
        Kind::StateChange(state) => (
            "EC2 Instance State-change Notification",
            serde_json::json!({"instance-id": instance, "state": state}),
        ),
        Kind::CapacityReservationInterruption => (
            "EC2 Capacity Reservation Instance Interruption Warning",
            serde_json::json!({"instance-id": instance}),
        ),
        Kind::ScheduledChange => (
            "AWS Health Event",
            serde_json::json!({"service": "EC2", "eventTypeCategory": "scheduledChange", "affectedEntities": [{"entityValue": instance}]}),
        ),
    };
    serde_json::json!({
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": detail_type,
        "source": if matches!(kind, Kind::ScheduledChange) { "aws.health" } else { "aws.ec2" },
        "account": "123456789012",
        "time": "2026-11-23T12:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": detail,
    })
    .to_string()
}

/// Counters of the interruption loop (exported as Prometheus metrics by the operator).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Messages received, by kind (`malformed`, `unknown_kind`… for the ones not understood).
    pub received: BTreeMap<String, u64>,
    /// Actions taken, by action.
    pub actions: BTreeMap<String, u64>,
    /// Seconds from a message being sent to its handling, the last [`AGES_KEPT`].
    pub ages: std::collections::VecDeque<f64>,
    pub deleted: u64,
}

/// Message ages kept for the figures (a long-running controller must not grow them).
pub const AGES_KEPT: usize = 1024;

/// A message understood and waiting for the controller to act, then [`Queue::done`].
#[derive(Debug, Clone)]
pub struct Received {
    pub notice: Notice,
    pub receipt: String,
    /// From the queue's SentTimestamp to now.
    pub age: Duration,
}

/// Queue errors name the call.
#[derive(Debug, thiserror::Error)]
#[error("SQS {call} on {queue}: {message}")]
pub struct QueueError {
    pub call: &'static str,
    pub queue: String,
    pub message: String,
}

/// The SQS side: long polls and deletes.
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    /// Long-poll wait (20 s in production; shorter in tests).
    pub wait: Duration,
    pub metrics: Metrics,
    /// The controller's Prometheus metrics, when it exports them.
    pub prom: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// The queue's URL from what the settings give: a URL as it is, a name (as Karpenter's
/// `settings.interruptionQueue` takes it) through `sqs:GetQueueUrl` in the client's region.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name_or_url: &str) -> Result<String, QueueError> {
    if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
        return Ok(name_or_url.to_string());
    }
    let out = sqs
        .get_queue_url()
        .queue_name(name_or_url)
        .send()
        .await
        .map_err(|e| {
            let message = match e.as_service_error() {
                Some(se) if se.is_queue_does_not_exist() => format!(
                    "no queue of that name in this account and region (the CloudFormation stack's output InterruptionQueueName; region {})",
                    sqs.config()
                        .region()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "unset".into())
                ),
                _ => aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            };
            QueueError {
                call: "GetQueueUrl",
                queue: name_or_url.to_string(),
                message,
            }
        })?;
    out.queue_url.ok_or_else(|| QueueError {
        call: "GetQueueUrl",
        queue: name_or_url.to_string(),
        message: "the answer had no QueueUrl".into(),
    })
}

impl Queue {
    /// A queue by URL.
    pub fn new(sqs: aws_sdk_sqs::Client, url: &str) -> Self {
        Queue {
            sqs,
            url: url.into(),
            wait: Duration::from_secs(20),
            metrics: Metrics::default(),
            prom: None,
        }
    }

    fn error(&self, call: &'static str, e: &(dyn std::error::Error + 'static)) -> QueueError {
        QueueError {
            call,
            queue: self.url.clone(),
            message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// One long poll (up to 10 messages). Messages not understood are logged, counted and
    /// deleted here; the understood ones are returned to act on.
    pub async fn poll(&mut self) -> Result<Vec<Received>, QueueError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.wait.as_secs() as i32)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
            )
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", &e))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut handled = Vec::new();
        let mut dropped = Vec::new();
        for m in out.messages() {
            let receipt = m.receipt_handle().unwrap_or_default().to_string();
            let sent = m
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(now_ms);
            let age = Duration::from_millis(now_ms.saturating_sub(sent));
            match parse(m.body().unwrap_or_default()) {
                Ok(notice) => {
                    self.count(notice.kind.label(), "received");
                    *self
                        .metrics
                        .received
                        .entry(notice.kind.label().to_string())
                        .or_default() += 1;
                    if self.metrics.ages.len() == AGES_KEPT {
                        self.metrics.ages.pop_front();
                    }
                    self.metrics.ages.push_back(age.as_secs_f64());
                    handled.push(Received {
                        notice,
                        receipt,
                        age,
                    });
                }
                Err(e) => {
                    tracing::warn!(message_id = m.message_id().unwrap_or_default(), error = %e, "dropping interruption message");
                    self.count(e.label(), "dropped");
                    *self
                        .metrics
                        .received
                        .entry(e.label().to_string())
                        .or_default() += 1;
                    dropped.push(receipt);
                }
            }
        }
        // What could not be understood goes in one call, so garbage never delays a warning.
        if !dropped.is_empty() {
            let mut req = self.sqs.delete_message_batch().queue_url(&self.url);
            for (i, r) in dropped.iter().enumerate() {
                req = req.entries(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .expect("id and receipt are set"),
                );
            }
            // A failed delete must not cost the notices understood in the same poll: they are
            // returned to act on, and the garbage comes back after its visibility timeout.
            match req.send().await {
                Ok(out) => {
                    self.metrics.deleted += out.successful().len() as u64;
                    for f in out.failed() {
                        tracing::warn!(
                            id = f.id(),
                            code = f.code(),
                            "could not delete a dropped message"
                        );
                    }
                }
                Err(e) => {
                    let e = self.error("DeleteMessageBatch", &e);
                    tracing::warn!(error = %e, messages = dropped.len(), "could not delete dropped messages; they return after their visibility timeout");
                }
            }
        }
        Ok(handled)
    }

    fn count(&self, kind: &str, action: &str) {
        if let Some(p) = &self.prom {
            p.interruption_messages
                .get_or_create(&vec![
                    ("kind", kind.to_string()),
                    ("action", action.to_string()),
                ])
                .inc();
        }
    }

    /// Deletes a handled message and counts the action taken.
    pub async fn done(&mut self, r: &Received, action: Action) -> Result<(), QueueError> {
        self.count(r.notice.kind.label(), &format!("{action:?}").to_lowercase());
        *self
            .metrics
            .actions
            .entry(format!("{action:?}").to_lowercase())
            .or_default() += 1;
        self.delete(&r.receipt).await
    }

    async fn delete(&mut self, receipt: &str) -> Result<(), QueueError> {
        self.sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| self.error("DeleteMessage", &e))?;
        self.metrics.deleted += 1;
        Ok(())
    }
}

/// The queue driven from a thread outside the runtime (the controller core is synchronous):
/// the core's [`Interruptions`].
pub struct BlockingQueue {
    pub bridge: crate::bridge::Bridge,
    pub queue: Queue,
}

impl Interruptions for BlockingQueue {
    fn poll(&mut self) -> Result<Vec<Received>, QueueError> {
        self.bridge.wait(self.queue.poll())
    }

    fn done(&mut self, r: &Received, action: Action) -> Result<(), QueueError> {
        self.bridge.wait(self.queue.done(r, action))
    }
}

/// The queue long-polled by a task of its own, so the controller's loop never waits on SQS:
/// notices arrive on a channel the core drains each tick, and handled messages are deleted
/// from the controller's thread.
pub struct Poller {
    bridge: crate::bridge::Bridge,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    /// Deletes handled messages (and counts the actions taken).
    deleter: Queue,
}

impl Poller {
    /// Starts long-polling `queue` on the bridge's runtime.
    pub fn spawn(bridge: &crate::bridge::Bridge, mut queue: Queue) -> Poller {
        let deleter = Queue::new(queue.sqs.clone(), &queue.url);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        bridge.handle().spawn(async move {
            loop {
                match queue.poll().await {
                    Ok(received) => {
                        for r in received {
                            if tx.send(r).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "polling the interruption queue failed; retrying");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Poller {
            bridge: bridge.clone(),
            rx,
            deleter,
        }
    }
}

impl Interruptions for Poller {
    fn poll(&mut self) -> Result<Vec<Received>, QueueError> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        Ok(out)
    }

    fn done(&mut self, r: &Received, action: Action) -> Result<(), QueueError> {
        self.bridge.wait(self.deleter.done(r, action))
    }
}

/// Where interruption notices come from (the SQS queue in production).
pub trait Interruptions {
    /// Takes what is waiting.
    fn poll(&mut self) -> Result<Vec<Received>, QueueError>;
    /// The notice was acted on (or deliberately not): delete it.
    fn done(&mut self, r: &Received, action: Action) -> Result<(), QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example AWS documents for a spot interruption warning.
    pub const SPOT: &str = r#"{
      "version": "0",
      "id": "12345678-1234-1234-1234-123456789012",
      "detail-type": "EC2 Spot Instance Interruption Warning",
      "source": "aws.ec2",
      "account": "123456789012",
      "time": "2026-11-23T12:00:00Z",
      "region": "us-east-1",
      "resources": ["arn:aws:ec2:us-east-1b:instance/i-1234567890abcdef0"],
      "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}
    }"#;

    #[test]
    fn every_documented_kind_parses() {
        let n = parse(SPOT).unwrap();
        assert_eq!(n.kind, Kind::SpotInterruption);
        assert_eq!(n.instance_ids, vec!["i-1234567890abcdef0"]);
        assert_eq!(action(&n, false), Action::Replace);

        let ev = |dt: &str, detail: &str| {
            format!(
                r#"{{"version":"0","detail-type":"{dt}","source":"aws.ec2","time":"2026-11-23T12:00:00Z","detail":{detail}}}"#
            )
        };
        let r = parse(&ev(
            "EC2 Instance Rebalance Recommendation",
            r#"{"instance-id":"i-0a"}"#,
        ))
        .unwrap();
        assert_eq!(action(&r, false), Action::Record);
        assert_eq!(action(&r, true), Action::Replace);
        for (state, act) in [
            ("stopping", Action::Replace),
            ("stopped", Action::Replace),
            ("shutting-down", Action::Replace),
            ("terminated", Action::Replace),
            ("running", Action::Ignore),
        ] {
            let s = parse(&ev(
                "EC2 Instance State-change Notification",
                &format!(r#"{{"instance-id":"i-0b","state":"{state}"}}"#),
            ))
            .unwrap();
            assert_eq!(action(&s, false), act, "{state}");
        }
        let h = parse(
            r#"{"detail-type":"AWS Health Event","source":"aws.health","detail":{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{"entityValue":"i-0c"},{"entityValue":"i-0d"}]}}"#,
        )
        .unwrap();
        assert_eq!(h.kind, Kind::ScheduledChange);
        assert_eq!(h.instance_ids, vec!["i-0c", "i-0d"]);
        let c = parse(&ev(
            "EC2 Capacity Reservation Instance Interruption Warning",
            r#"{"instance-id":"i-0e"}"#,
        ))
        .unwrap();
        assert_eq!(c.kind, Kind::CapacityReservationInterruption);
    }

    #[test]
    fn bad_messages_say_why() {
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse("{}"), Err(ParseError::NoDetailType));
        assert!(matches!(
            parse(r#"{"detail-type":"EC2 AMI State Change","detail":{}}"#),
            Err(ParseError::Unknown(_))
        ));
        assert!(matches!(
            parse(r#"{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{}}"#),
            Err(ParseError::Malformed { .. })
        ));
        assert!(matches!(
            parse(&SPOT[..SPOT.len() / 2]),
            Err(ParseError::NotJson(_))
        ));
    }
}

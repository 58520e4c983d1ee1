//! The interruption queue a simulation against AWS sends EventBridge messages to.

use super::*;

/// The interruption queue with the runtime that drives it (the simulator is synchronous).
pub(super) struct QueueClient {
    bridge: crate::bridge::Bridge,
    sqs: aws_sdk_sqs::Client,
    url: String,
    pub(super) queue: crate::interruption::BlockingQueue,
}

impl QueueClient {
    pub(super) fn new(
        settings: &crate::cloud::aws::AwsSettings,
        url: &str,
        events_endpoint: Option<&str>,
    ) -> Result<Self, SimError> {
        let bridge =
            crate::bridge::Bridge::own().map_err(|e| SimError::Input(format!("runtime: {e}")))?;
        let config = bridge.wait(settings.sdk_config());
        let mut queue = crate::interruption::Queue::new(aws_sdk_sqs::Client::new(&config), url);
        let sqs = match events_endpoint {
            Some(endpoint) => {
                let mut events = settings.clone();
                events.endpoint = Some(endpoint.to_string());
                aws_sdk_sqs::Client::new(&bridge.wait(events.sdk_config()))
            }
            None => aws_sdk_sqs::Client::new(&config),
        };
        // The virtual clock does not wait: take what is there.
        queue.wait = Duration::ZERO;
        Ok(QueueClient {
            queue: crate::interruption::BlockingQueue {
                bridge: bridge.clone(),
                queue,
            },
            bridge,
            sqs,
            url: url.into(),
        })
    }

    /// Sends the EventBridge message EC2 would for `instance`.
    pub(super) fn send(
        &mut self,
        kind: &crate::interruption::Kind,
        instance: &str,
    ) -> Result<(), String> {
        let body = crate::interruption::example_message(kind, instance);
        self.bridge
            .wait(
                self.sqs
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(body)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}

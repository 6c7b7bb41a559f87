//! Topic rights of an authenticated device: it publishes only under `devices/{id}/` and
//! subscribes only to its own ack and commands topics (docs/operations.md, "Device
//! security"). Pure functions, a leaf module: the device gate checks them on every PUBLISH and
//! SUBSCRIBE, and a dead-letter replay applies the same rights (`crate::pipeline::Replay`).

/// Whether device `id` may publish on `topic`: under `devices/{id}/`, not its ack or
/// commands topics (those are the gateway's), except `devices/{id}/commands/status`, where
/// it answers commands (`crate::downlink`).
pub fn may_publish(id: &str, topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix("devices/").and_then(|t| t.strip_prefix(id)).and_then(|t| t.strip_prefix('/'))
    else {
        return false;
    };
    rest == "commands/status"
        || (!rest.is_empty() && rest != "ack" && rest != "commands" && !rest.starts_with("commands/"))
}

/// Whether device `id` may subscribe to `filter`: its own `devices/{id}/ack`,
/// `devices/{id}/commands`, or a filter under `devices/{id}/commands/`.
pub fn may_subscribe(id: &str, filter: &str) -> bool {
    let Some(rest) = filter.strip_prefix("devices/").and_then(|t| t.strip_prefix(id)).and_then(|t| t.strip_prefix('/'))
    else {
        return false;
    };
    rest == "ack" || rest == "commands" || rest.starts_with("commands/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_publish_and_subscribe_only_on_their_own_topics() {
        assert!(may_publish("d1", "devices/d1/events"));
        assert!(may_publish("d1", "devices/d1/status/x"));
        assert!(may_publish("d1", "devices/d1/commands/status"), "answers to commands");
        for topic in [
            "devices/d2/events",
            "devices/d1",
            "devices/d1/",
            "devices/d1/ack",
            "devices/d1/commands",
            "devices/d1/commands/reboot",
            "devices/d10/events",
            "zigbee2mqtt/d1",
            "$SYS/x",
            "devices/d1x/events",
        ] {
            assert!(!may_publish("d1", topic), "{topic}");
        }
        assert!(may_subscribe("d1", "devices/d1/ack"));
        assert!(may_subscribe("d1", "devices/d1/commands"));
        assert!(may_subscribe("d1", "devices/d1/commands/#"));
        for filter in
            ["#", "devices/+/ack", "devices/d1/#", "devices/d1/events", "devices/d2/ack", "$share/g/devices/d1/ack"]
        {
            assert!(!may_subscribe("d1", filter), "{filter}");
        }
    }
}

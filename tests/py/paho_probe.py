"""One MQTT conformance scenario against the gateway's device port with paho-mqtt 2.

Usage: paho_probe.py SCENARIO PORT [ARGS...]; prints one JSON object of what the client saw.
Driven by tests/tests/mqtt_conformance.rs (edge_tests::paho). Every wait is for an event
(a callback), bounded by WAIT seconds; an absence is proven by a later marker message.
"""

import json
import queue
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 10


class Probe:
    """A paho client whose callbacks land in a queue."""

    def __init__(self, port, v5, client_id=None, **connect):
        self.port = port
        self.events = queue.Queue()
        self.seen = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or "probe-" + uuid.uuid4().hex[:8],
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            **({} if v5 else {"clean_session": connect.pop("clean_session", True)}),
        )
        c = self.client
        c.on_connect = lambda _c, _u, flags, rc, props: self.events.put(
            ("connect", rc.value, flags.session_present, props))
        c.on_disconnect = lambda _c, _u, _f, rc, props: self.events.put(("disconnect", rc.value))
        c.on_message = lambda _c, _u, m: self.events.put(
            ("message", m.topic, m.qos, m.retain, bytes(m.payload)))
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.events.put(("suback", mid, [r.value for r in rcs]))
        c.on_unsubscribe = lambda _c, _u, mid, _rcs, _p: self.events.put(("unsuback", mid))
        c.on_publish = lambda _c, _u, mid, _rc, _p: self.events.put(("puback", mid))
        self.connect = connect

    def start(self):
        """Connects; returns (reason code, session present, CONNACK properties)."""
        self.client.connect("127.0.0.1", self.port, **self.connect)
        self.client.loop_start()
        event = self.wait("connect", "disconnect")
        if event[0] == "disconnect":
            return (None, False, None)
        return event[1:]

    def wait(self, *kinds):
        """The next event of one of `kinds`; others are kept in `self.seen`."""
        while True:
            event = self.events.get(timeout=WAIT)
            if event[0] in kinds:
                return event
            self.seen.append(event)

    def messages_until(self, marker):
        """Messages up to and including the one whose payload is `marker`."""
        got = [e for e in self.seen if e[0] == "message"]
        self.seen.clear()
        while not any(m[4] == marker for m in got):
            got.append(self.wait("message"))
        return got

    def subscribe(self, topic, qos=1, **options):
        if options:
            self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        else:
            self.client.subscribe(topic, qos)
        return self.wait("suback")[2]

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            self.wait("puback")
        return info

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def props(**values):
    p = Properties(PacketTypes.CONNECT)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def raw(probe, packet):
    """Sends bytes on the client's own socket, after everything paho sent."""
    probe.client.socket().send(bytes(packet))


def keep_alive_off(port):
    p = Probe(port, False, keepalive=0)
    rc = p.start()[0]
    p.publish("devices/ka0/events", b"x")
    p.stop()
    return {"connack": rc, "puback": True}


def level(port, version):
    p = Probe(port, version == "5")
    try:
        rc, _, _ = p.start()
    except Exception as e:  # paho may refuse to parse a 3.1.1-form CONNACK on v5
        return {"connected": False, "error": str(e)}
    p.client.loop_stop()
    return {"connected": rc == 0, "rc": rc}


def violation(port, what):
    p = Probe(port, False)
    assert p.start()[0] == 0
    if what == "second_connect":
        raw(p, [0x10, 12, 0, 4, 77, 81, 84, 84, 4, 2, 0, 30, 0, 0])
    elif what == "wildcard":
        try:
            p.client.publish("conf/+/x", b"x")
            refused_by_client = False
        except ValueError:
            refused_by_client = True
        raw(p, [0x30, 11, 0, 8] + list(b"conf/+/x") + [ord("x")])
        if not refused_by_client:
            return {"refused_by_client": False}
    event = p.wait("disconnect")
    p.client.loop_stop()
    return {"disconnected": True, "rc": event[1]}


def qos_downgrade(port, v5):
    v5 = v5 == "5"
    topic = "conf/qos/" + uuid.uuid4().hex[:6]
    sub = Probe(port, v5)
    sub.start()
    sub.subscribe(topic + "/sub1", 1)
    sub.subscribe(topic + "/sub0", 0)
    pub = Probe(port, v5)
    pub.start()
    pub.publish(topic + "/sub1", b"q0", qos=0)
    pub.publish(topic + "/sub1", b"marker1", qos=1)
    got = {m[4].decode(): m[2] for m in sub.messages_until(b"marker1")}
    pub.publish(topic + "/sub0", b"q1", qos=1)
    got.update({m[4].decode(): m[2] for m in sub.messages_until(b"q1")})
    sub.stop()
    pub.stop()
    return {"qos0_publish_to_qos1_subscription": got.get("q0"), "qos1_publish_to_qos0_subscription": got.get("q1")}


def retained(port):
    topic = "conf/retained/" + uuid.uuid4().hex[:6]
    pub = Probe(port, False)
    pub.start()
    pub.publish(topic, b"kept", retain=True)
    sub = Probe(port, False)
    sub.start()
    sub.subscribe(topic)
    pub.publish(topic, b"m1")
    first = sum(1 for m in sub.messages_until(b"m1") if m[4] == b"kept" and m[3])
    sub.subscribe(topic)  # identical re-subscribe [MQTT-3.8.4-3]
    pub.publish(topic, b"m2")
    again = sum(1 for m in sub.messages_until(b"m2") if m[4] == b"kept")
    sub.client.unsubscribe(topic)
    sub.wait("unsuback")
    sub.subscribe(topic)
    pub.publish(topic, b"m3")
    after_unsubscribe = sum(1 for m in sub.messages_until(b"m3") if m[4] == b"kept")
    pub.publish(topic, b"", retain=True)
    sub.stop()
    pub.stop()
    return {"on_subscribe": first, "on_identical_resubscribe": again, "after_unsubscribe": after_unsubscribe}


def max_packet_size(port):
    p = Probe(port, True)
    rc, _, connack = p.start()
    advertised = getattr(connack, "MaximumPacketSize", None)
    p.client.publish("conf/max/big", b"x" * (advertised or 1 << 20), qos=0)
    event = p.wait("disconnect")
    p.client.loop_stop()
    return {"connack": rc, "advertised": advertised, "disconnect_reason": event[1]}


def client_max_packet_size(port, count):
    topic = "conf/clientmax/" + uuid.uuid4().hex[:6]
    sub = Probe(port, True, properties=props(MaximumPacketSize=200, TopicAliasMaximum=10))
    sub.start()
    sub.subscribe(topic, 1)
    pub = Probe(port, True)
    pub.start()
    for i in range(int(count)):
        pub.publish(topic, b"B" * 400, qos=1)
    pub.publish(topic, b"small", qos=1)
    pub.publish(topic, b"marker", qos=1)
    got = sub.messages_until(b"marker")
    sub.stop()
    pub.stop()
    return {"received": [len(m[4]) for m in got]}


def session_expiry(port):
    topic = "conf/session/" + uuid.uuid4().hex[:6]
    cid = "sess-" + uuid.uuid4().hex[:6]
    pub = Probe(port, True)
    pub.start()
    # Clean Start = 1 with an expiry: a new session that outlives the connection.
    a = Probe(port, True, cid, clean_start=True, properties=props(SessionExpiryInterval=300))
    first_present = a.start()[1]
    a.subscribe(topic, 1)
    a.stop()
    pub.publish(topic, b"while-away", qos=1)
    b = Probe(port, True, cid, clean_start=False, properties=props(SessionExpiryInterval=300))
    resumed_present = b.start()[1]
    pub.publish(topic, b"marker", qos=1)
    resumed_got = [m[4].decode() for m in b.messages_until(b"marker")]
    b.stop()
    # Clean Start = 1 again: the kept session is discarded first.
    c = Probe(port, True, cid, clean_start=True, properties=props(SessionExpiryInterval=300))
    restarted_present = c.start()[1]
    c.subscribe(topic + "/other", 1)
    pub.publish(topic, b"old-subscription", qos=1)
    pub.publish(topic + "/other", b"marker2", qos=1)
    restarted_got = [m[4].decode() for m in c.messages_until(b"marker2")]
    c.stop()
    # Expiry 0 (absent): the session ends with the connection.
    d = Probe(port, True, cid, clean_start=False)
    ended_present = d.start()[1]
    d.stop()
    e = Probe(port, True, cid, clean_start=False)
    after_zero_present = e.start()[1]
    e.stop()
    pub.stop()
    return {
        "first_present": first_present,
        "resumed_present": resumed_present,
        "resumed_got": resumed_got,
        "restarted_present": restarted_present,
        "restarted_got": restarted_got,
        "expiry0_resumed_present": ended_present,
        "after_expiry0_present": after_zero_present,
    }


def no_local(port):
    topic = "conf/nolocal/" + uuid.uuid4().hex[:6]
    p = Probe(port, True)
    p.start()
    p.subscribe(topic, 1, noLocal=True)
    p.publish(topic, b"own", qos=1)
    other = Probe(port, True)
    other.start()
    other.publish(topic, b"marker", qos=1)
    got = [m[4].decode() for m in p.messages_until(b"marker")]
    p.stop()
    other.stop()
    return {"received": got}


SCENARIOS = {
    "keep_alive_off": keep_alive_off,
    "level": level,
    "violation": violation,
    "qos_downgrade": qos_downgrade,
    "retained": retained,
    "max_packet_size": max_packet_size,
    "client_max_packet_size": client_max_packet_size,
    "session_expiry": session_expiry,
    "no_local": no_local,
}

if __name__ == "__main__":
    scenario, port, *args = sys.argv[1:]
    print(json.dumps(SCENARIOS[scenario](int(port), *args)))

//! A carrier known only by its domain: holdfast resolves it (RFC 3263 SRV → A) through an
//! in-process DNS server, health-checks every resolved address, and calls the live one.
mod common;

use common::dns::*;
use common::scenarios as sc;
use common::*;
use std::time::Duration;

#[test]
fn call_reaches_the_live_srv_address_of_a_carrier_named_by_dns() {
    let (hp, agent, dead, live) = (free_port(), free_port(), free_port(), free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = vec![
        srv(
            "_sip._udp.carrier.test.",
            30,
            10,
            10,
            dead,
            "sip1.carrier.test.",
        ),
        srv(
            "_sip._udp.carrier.test.",
            30,
            20,
            10,
            live,
            "sip2.carrier.test.",
        ),
        a("sip1.carrier.test.", 30, [127, 0, 0, 1]),
        a("sip2.carrier.test.", 30, [127, 0, 0, 1]),
    ];
    let dns = rt.block_on(start_zone("carrier.test.", records));

    let mut c = TestConfig::new(hp);
    c.health = "ping_interval: 200ms\n  ping_timeout: 200ms\n  down_after: 1\n  up_after: 1".into();
    c.carriers
        .push("{ id: carrier, uri: \"sip:carrier.test\", region: us }".into());
    c.providers.push(format!(
        "{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{agent}\"] }}"
    ));
    c.outbound
        .push("{ regions: [us], carriers: [carrier] }".into());
    let yaml = format!("{}dns:\n  nameservers: [\"{}\"]\n", c.yaml(), dns.addr);
    let uas = Sipp::uas("live", &sc::uas_answer(), live, None);
    let hf = Holdfast::start(&yaml, hp);
    hf.wait_log(Duration::from_secs(10), |l| msg(l) == "target resolved")
        .expect("carrier.test never resolved");
    let dead_addr = format!("127.0.0.1:{dead}");
    hf.wait_log(Duration::from_secs(10), |l| {
        field(l, "addr") == dead_addr && field(l, "to").contains("Down")
    })
    .expect("the dead SRV address was never marked down");
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(Duration::from_secs(30));
    assert!(r.success(), "call failed: {}\n{}", r.output, r.errors);
    let live_addr = format!("127.0.0.1:{live}");
    assert!(
        hf.find_log(|l| msg(l) == "trying" && field(l, "remote") == live_addr)
            .is_some(),
        "the call did not go to the live SRV address"
    );
    drop(uas);
    drop(dns);
}

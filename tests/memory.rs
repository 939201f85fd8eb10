//! Memory after calls end: holdfast reports its resident memory
//! (`process_resident_memory_bytes`) and, once the calls of a burst have ended, gives the
//! heap they freed back to the OS (the trim's debug log line, with RSS before and after).
//! The 15-minute churn itself is a benchmark (`benches/churn.sh`, BENCHMARKS.md).
mod common;

use common::http::{get, metric};
use common::scenarios as sc;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const TRIMMED: &str = "load dropped: freed heap returned to the OS";

fn resident_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn the_heap_is_given_back_once_a_burst_of_calls_ended() {
    const CALLS: u32 = 30;
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{trunk}\"] }}"
    ));
    c.providers.push(format!(
        "{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    c.media = format!("ports: \"{}\"", media_ports(4 * CALLS as u16 + 8));
    let uas = Sipp::uas("agent", &sc::uas_answer(), agent, Some(CALLS));
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();

    let m = get(admin, "/metrics", None).body;
    let rss = metric(&m, "process_resident_memory_bytes", &[])
        .unwrap_or_else(|| panic!("no process_resident_memory_bytes:\n{m}"));
    let proc_rss = resident_kib(hf.pid()) * 1024.0;
    assert!(
        rss > 1e6 && (rss - proc_rss).abs() < proc_rss / 5.0,
        "process_resident_memory_bytes {rss} vs VmRSS {proc_rss}"
    );
    assert!(
        hf.find_log(|l| msg(l) == TRIMMED).is_none(),
        "no call yet, nothing to trim"
    );

    // A burst: all the calls up at once for 2 s, then hung up.
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(2000),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        CALLS,
        &["-r", "50", "-l", &CALLS.to_string()],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);

    // A check (every 10 s) once the calls and most of their transactions are over: the heap
    // is trimmed.
    let (_, line) = hf
        .wait_log(WAIT, |l| msg(l) == TRIMMED)
        .unwrap_or_else(|| panic!("no trim after the calls ended; logs:\n{}", hf.dump_logs()));
    let mib = |k: &str| field(&line, k).parse::<f64>().unwrap_or(f64::NAN);
    assert!(
        mib("rss_before_mib") > 0.0 && mib("rss_after_mib") > 0.0,
        "RSS before and after in the trim's line: {line}"
    );
    assert!(
        mib("rss_after_mib") <= mib("rss_before_mib"),
        "a trim never adds memory: {line}"
    );
}

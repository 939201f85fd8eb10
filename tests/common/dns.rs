//! An in-process authoritative DNS server (hickory-server) on a free 127.0.0.1 port, for
//! RFC 3263 tests: resolver unit-level tests and end-to-end calls to targets named by DNS.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, NAPTR, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

const SERIAL: u32 = 1;

pub fn name(s: &str) -> Name {
    Name::from_str(s).expect("test name")
}

pub fn naptr(owner: &str, ttl: u32, order: u16, pref: u16, service: &str, repl: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::NAPTR(NAPTR::new(
            order,
            pref,
            b"s".to_vec().into_boxed_slice(),
            service.as_bytes().to_vec().into_boxed_slice(),
            Box::default(),
            name(repl),
        )),
    )
}

pub fn srv(owner: &str, ttl: u32, prio: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::SRV(SRV::new(prio, weight, port, name(target))),
    )
}

pub fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

pub fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    let ip: Ipv6Addr = ip.parse().expect("v6");
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

pub struct DnsServer {
    pub addr: SocketAddr,
    _server: Server<Catalog>,
}

/// Serves `records` for the zone `origin` (e.g. "example.test.") until dropped.
pub async fn start_zone(origin: &str, records: Vec<Record>) -> DnsServer {
    let origin = name(origin);
    let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = Record::from_rdata(
        origin.clone(),
        3600,
        RData::SOA(SOA::new(
            name(&format!("ns.{origin}")),
            name(&format!("hostmaster.{origin}")),
            SERIAL,
            3600,
            600,
            86400,
            5,
        )),
    );
    assert!(handler.upsert_mut(soa, SERIAL));
    for record in records {
        let desc = format!("{record:?}");
        assert!(handler.upsert_mut(record, SERIAL), "insert {desc}");
    }
    let mut catalog = Catalog::new();
    let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
    catalog.upsert(LowerName::new(&origin), vec![handler]);

    // UDP and TCP on the same free port (the resolver falls back to TCP on truncation).
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("udp addr");
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    DnsServer {
        addr,
        _server: server,
    }
}

//! A minimal DNS client for one question: the TXT records of a name
//! (RFC 1035), asked over UDP to one resolver. Used to see whether the
//! admin's DNS-01 record is visible before the ACME server is told to look.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;

/// The first `nameserver` of /etc/resolv.conf (port 53).
pub fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

fn query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("{name:?} is not a domain name");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 16, 0, 1]); // TXT, IN
    Ok(q)
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l => at += 1 + l,
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an answer to [`query`]: every TXT string of every answer record.
fn parse_txt(b: &[u8], id: u16) -> Option<Vec<String>> {
    if be16(b, 0)? != id || b.get(2)? & 0x80 == 0 {
        return None;
    }
    let (qd, an) = (be16(b, 4)?, be16(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(b, at)?;
        let (rtype, rdlen) = (be16(b, at)?, be16(b, at + 8)? as usize);
        let rdata = b.get(at + 10..at + 10 + rdlen)?;
        at += 10 + rdlen;
        if rtype != 16 {
            continue;
        }
        let mut s = String::new();
        let mut i = 0;
        while i < rdata.len() {
            let l = rdata[i] as usize;
            s.push_str(&String::from_utf8_lossy(rdata.get(i + 1..i + 1 + l)?));
            i += 1 + l;
        }
        out.push(s);
    }
    Some(out)
}

/// The TXT records of `name` as `resolver` answers now.
pub async fn txt(resolver: SocketAddr, name: &str) -> anyhow::Result<Vec<String>> {
    let id: u16 = rand::random();
    let q = query(id, name)?;
    let sock = UdpSocket::bind(if resolver.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&q, resolver).await?;
        let Ok(r) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await else { continue };
        let (n, from) = r?;
        if from.ip() != resolver.ip() {
            continue;
        }
        return parse_txt(&buf[..n], id).with_context(|| format!("malformed DNS answer from {resolver}"));
    }
    bail!("the DNS server {resolver} does not answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txt_answer_with_a_compressed_name_is_read() {
        let q = query(0x1234, "_acme-challenge.box.test").unwrap();
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 2; // two answers
        for value in ["abc", "second-value"] {
            a.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
            a.extend_from_slice(&((value.len() + 1) as u16).to_be_bytes());
            a.push(value.len() as u8);
            a.extend_from_slice(value.as_bytes());
        }
        assert_eq!(parse_txt(&a, 0x1234), Some(vec!["abc".to_string(), "second-value".to_string()]));
        assert_eq!(parse_txt(&a, 0x9999), None, "another query's answer");
        assert_eq!(parse_txt(&a[..a.len() - 3], 0x1234), None, "truncated");
        assert!(query(1, "a..b").is_err());
    }
}

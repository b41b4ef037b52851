//! The server's address as a person types it: `HOST:PORT`, `HOST` alone
//! (the default port), `[IPv6]:PORT`, `[IPv6]` or a bare IPv6 address.

use std::net::Ipv6Addr;

/// The port used when none is given; the server's default.
pub(crate) const DEFAULT_PORT: u16 = 8080;

/// `typed` as `HOST:PORT`, ready to resolve; or a sentence saying what is
/// wrong with it.
pub(crate) fn parse(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Err("the address is empty; give HOST:PORT, e.g. 127.0.0.1:8080".into());
    }
    if typed.contains("://") {
        return Err(format!(
            "{typed:?} looks like a URL; give HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}"
        ));
    }
    if let Some(rest) = typed.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(format!("{typed:?} has no closing ']'"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} in {typed:?} is not an IPv6 address"));
        }
        return match after {
            "" => Ok(format!("[{ip}]:{DEFAULT_PORT}")),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok(format!("[{ip}]:{}", port_of(port, typed)?)),
                None => Err(format!("{typed:?}: expected ':PORT' after ']'")),
            },
        };
    }
    // Two colons or more: a bare IPv6 address, whose port needs brackets.
    if typed.matches(':').count() > 1 {
        return match typed.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(format!("[{ip}]:{DEFAULT_PORT}")),
            Err(_) => Err(format!(
                "{typed:?} is not an address; write an IPv6 address with a port as [::1]:{DEFAULT_PORT}"
            )),
        };
    }
    match typed.split_once(':') {
        None => Ok(format!("{typed}:{DEFAULT_PORT}")),
        Some(("", _)) => Err(format!("{typed:?} has no host; e.g. 127.0.0.1{typed}")),
        Some((host, port)) => Ok(format!("{host}:{}", port_of(port, typed)?)),
    }
}

fn port_of(port: &str, typed: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "{port:?} in {typed:?} is not a port (1 to 65535); leave it out for {DEFAULT_PORT}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_people_type() {
        for (typed, meant) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("127.0.0.1", "127.0.0.1:8080"),
            ("localhost", "localhost:8080"),
            ("chat.example:9000", "chat.example:9000"),
            (" localhost:1 ", "localhost:1"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::1]:9", "[::1]:9"),
            ("[::1]", "[::1]:8080"),
            ("::1", "[::1]:8080"),
            ("fe80::1", "[fe80::1]:8080"),
        ] {
            assert_eq!(parse(typed).as_deref(), Ok(meant), "{typed}");
        }
    }

    #[test]
    fn mistakes_get_a_hint() {
        for typed in [
            "",
            "localhost:",
            "localhost:http",
            "localhost:0",
            "localhost:65536",
            ":8080",
            "[::1",
            "[::1]8080",
            "[nonsense]:1",
            "::1:8080:",
            "tcp://localhost:8080",
        ] {
            let err = parse(typed).expect_err(typed);
            assert!(!err.is_empty());
        }
        assert!(parse("localhost:http").unwrap_err().contains("not a port"));
    }
}

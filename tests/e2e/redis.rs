//! A `redis-server` of a test's own on a free loopback port (`scripts/test.sh` installs it),
//! spoken to over RESP directly, so that what a test checks in Redis does not go through the
//! server's own client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::support::{eventually, PATIENCE};

/// A redis-server of the test's own, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (scripts/test.sh installs it)");
        let server = Self { port, child };
        eventually("redis-server answers PING", || server.command(&["PING"]).ok().filter(|r| r == "PONG"));
        server
    }

    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        Self::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("\"redis://127.0.0.1:{}\"", self.port)
    }

    /// One command over RESP; the reply's text (a status, an integer or a bulk string; empty for nil).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            // A nil bulk string (a key that is not there): empty.
            Some(b'$') if line == "$-1" => Ok(String::new()),
            Some(b'$') => {
                let length: usize = line[1..].parse().map_err(std::io::Error::other)?;
                let mut body = vec![0u8; length + 2];
                reader.read_exact(&mut body)?;
                Ok(String::from_utf8_lossy(&body[..length]).into_owned())
            }
            _ => Ok(line[1..].to_owned()),
        }
    }

    /// How many times Redis has run `command` (INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).expect("INFO commandstats");
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

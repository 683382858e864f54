//! A small HTTP/1.1 client over `TcpStream`: exact control of what is sent (oversized heads, odd hosts,
//! a chosen source address) and of how a response is read (event streams, chunk by chunk).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response read to its end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads a chunked body as a plain stream.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size `{}`", line.trim())))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..wanted])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}

fn head(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// Reads the status line and headers.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("status line `{}`", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Sends raw bytes and reads the whole response.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    stream.write_all(bytes)?;
    read_response(stream)
}

fn read_response(stream: TcpStream) -> std::io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        Chunked { inner: reader, left: 0, done: false }.read_to_end(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// One request with extra headers.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    send_raw(addr, head(method, path, &addr.to_string(), headers).as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[])
}

/// A GET to the server's port on another of this machine's addresses: the kernel then uses that
/// address as the source, so the server sees a client that is not on loopback.
pub fn get_via(ip: std::net::IpAddr, addr: SocketAddr, path: &str) -> Response {
    let target = SocketAddr::new(ip, addr.port());
    send_raw(target, head("GET", path, &target.to_string(), &[]).as_bytes()).unwrap_or_else(|e| panic!("GET {path} via {target}: {e}"))
}

/// An open event stream.
pub struct EventStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    lines: Box<dyn BufRead + Send>,
    /// The `retry:` field, when one came.
    pub retry: Option<u64>,
    stream: TcpStream,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub data: String,
}

impl EventStream {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<EventStream> {
        let mut stream = connect(addr)?;
        stream.write_all(head("GET", path, &addr.to_string(), headers).as_bytes())?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let (status, response_headers) = read_head(&mut reader)?;
        let chunked = response_headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let lines: Box<dyn BufRead + Send> = if chunked {
            Box::new(BufReader::new(Chunked { inner: reader, left: 0, done: false }))
        } else {
            Box::new(reader)
        };
        Ok(EventStream { status, headers: response_headers, lines, retry: None, stream })
    }

    /// A response header's value.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The next event (comments and keep-alives skipped); None at the end of the stream.
    pub fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        let (mut event, mut data) = (String::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let text = line.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    return Ok(Some(Event { event: if event.is_empty() { "message".into() } else { event }, data }));
                }
                continue;
            }
            if text.starts_with(':') {
                continue;
            }
            let (field, value) = text.split_once(':').map_or((text, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "event" => event = value.to_string(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The next `frame` event's object.
    pub fn next_frame(&mut self) -> serde_json::Value {
        loop {
            match self.next_event().expect("reading events") {
                Some(e) if e.event == "frame" => return serde_json::from_str(&e.data).unwrap(),
                Some(_) => continue,
                None => panic!("the event stream ended"),
            }
        }
    }

    /// Closes the connection now.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Parses `name{labels} value` lines of a metrics exposition into (name with labels, value).
pub fn metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("metrics line `{l}`"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("metrics value in `{l}`")))
        })
        .collect()
}

/// One metric's value by its exact name (with labels, as exposed).
pub fn metric(text: &str, name: &str) -> f64 {
    metrics(text).into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}")).1
}

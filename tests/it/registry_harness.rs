//! Registry test harness: the real CNCF distribution registry (`docker-registry serve`) on
//! 127.0.0.1 with temporary storage and its log captured, in three set-ups (plain HTTP,
//! htpasswd Basic auth, TLS with a CA made here), and a small fault-injecting HTTP proxy to put
//! in front of it.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// How the registry is set up.
pub enum Setup {
    /// Plain HTTP, anonymous.
    Plain,
    /// htpasswd Basic auth with this user and password.
    Htpasswd(&'static str, &'static str),
    /// TLS with a certificate signed by a CA made for the test (`ca.crt` in the registry dir).
    Tls,
}

/// A running registry; killed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The registry's directory (config, storage, log, certificates).
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry, or returns None (test skipped) when `docker-registry` is missing.
    pub fn start(setup: Setup) -> Option<Registry> {
        if !have_tool("docker-registry") {
            return None;
        }
        if matches!(setup, Setup::Tls) && !have_tool("openssl") {
            return None;
        }
        let dir = tempdir();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        // (`http:` block additions, top-level `auth:` block)
        let (http_tls, auth) = match setup {
            Setup::Plain => (String::new(), String::new()),
            Setup::Htpasswd(user, pass) => {
                let hash = bcrypt::hash(pass, 4).unwrap();
                fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
                let auth = format!(
                    "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                );
                (String::new(), auth)
            }
            Setup::Tls => {
                make_certs(dir.path());
                let tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.path().join("server.crt").display(),
                    dir.path().join("server.key").display()
                );
                (tls, String::new())
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{http_tls}{auth}",
            dir.path().join("storage").display()
        );
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry { host, dir, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&reg.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start:\n{}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    /// Everything the registry logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("registry.log")).unwrap_or_default())
            .into_owned()
    }

    /// The access-log request lines (`METHOD PATH STATUS`) logged so far.
    pub fn requests(&self) -> Vec<String> {
        access_lines(&self.log())
    }

    /// The CA certificate (TLS set-up).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `HOST/PATH`.
    pub fn r(&self, path: &str) -> String {
        format!("{}/{path}", self.host)
    }
}

/// `"GET /v2/x HTTP/1.1" 200` → `GET /v2/x 200`.
pub fn access_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let start = l
                .find("\"GET ")
                .or(l.find("\"HEAD "))
                .or(l.find("\"POST "))
                .or(l.find("\"PUT "))
                .or(l.find("\"PATCH "))?;
            let rest = &l[start + 1..];
            let end = rest.find('"')?;
            let req = &rest[..end];
            let status = rest[end + 1..].split_whitespace().next().unwrap_or("");
            let mut parts = req.split(' ');
            Some(format!("{} {} {status}", parts.next()?, parts.next()?))
        })
        .collect()
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args)).ok();
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=hoist test CA",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A hoist command for registry tests: HOME and docker/containers config pointed into `home`
/// (so the developer's own credentials and certs.d are never read), fast retries.
pub fn hoist_in(home: &Path) -> Command {
    let mut c = hoist();
    c.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("HOIST_USERNAME")
        .env_remove("HOIST_PASSWORD")
        .env("HOIST_RETRY_BACKOFF_MS", "50")
        .env("NO_PROXY", "*");
    c
}

/// Builds a small image from scratch for `platform` with one layer holding `content` at
/// /data/file, into `oci:DIR:TAG`; returns the manifest digest.
pub fn scratch_image(
    home: &Path,
    layout: &Path,
    tag: &str,
    platform: &str,
    content: &str,
) -> String {
    let src = home.join(format!("src-{tag}"));
    write_file(&src.join("file"), content.as_bytes(), 0o644);
    let out = run(hoist_in(home)
        .args([
            "build",
            "--base",
            "scratch",
            "--platform",
            platform,
            "--layer",
        ])
        .arg(format!("{}:/data", src.display()))
        .arg("--output")
        .arg(format!("oci:{}:{tag}", layout.display())))
    .ok();
    printed_digest(&out)
}

/// Adds to `layout` an index tagged `tag` listing the manifests tagged `tags` (with their
/// platforms): the multi-platform image the tests push with skopeo.
pub fn make_index(layout: &Path, tags: &[&str], tag: &str) -> String {
    let index = index_json(layout);
    let mut children = Vec::new();
    for t in tags {
        let mut d = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *t)
            .unwrap()
            .clone();
        d.as_object_mut().unwrap().remove("annotations");
        children.push(d);
    }
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children});
    let raw = serde_json::to_vec(&doc).unwrap();
    let digest = hoist::Digest::of(&raw);
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &raw).unwrap();
    let mut top = index.clone();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest.to_string(), "size": raw.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}));
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    digest.to_string()
}

/// What the fault proxy does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Answer with this status and headers without forwarding.
    Respond(u16, Vec<(&'static str, String)>),
    /// Answer with this status, headers and body without forwarding.
    RespondBody(u16, Vec<(&'static str, String)>, String),
    /// Read half the request body, then close the connection.
    ResetMidBody,
    /// Forward it, then close the connection without answering (the request landed).
    DropResponse,
    /// Forward it and flip the last byte of the response body.
    CorruptBody,
    /// Forward it, then hold the answer back this long (the client times out; the request landed).
    Stall(Duration),
    /// Read the request's head, then stop reading its body for this long (a registry that stops
    /// taking an upload), then close the connection.
    StallBody(Duration),
}

/// A fault-injecting HTTP/1.1 proxy (one request per connection) in front of `upstream`.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Every request seen: `METHOD PATH -> fault`.
    pub seen: Arc<Mutex<Vec<String>>>,
}

/// A request as the proxy's rule sees it.
pub struct Request {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// The proxy's own `127.0.0.1:PORT`.
    pub proxy: String,
    /// The body's declared length; `None` for a chunked (streamed) body.
    pub body_len: Option<usize>,
}

type Rule = dyn Fn(&Request) -> Fault + Send + Sync;

impl FaultProxy {
    /// Starts the proxy; `rule(method, path)` decides each request's fate.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&str, &str) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        Self::start_with(upstream, move |r: &Request| rule(&r.method, &r.path))
    }

    /// Starts the proxy with a rule that sees the whole [`Request`].
    pub fn start_with(
        upstream: &str,
        rule: impl Fn(&Request) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let upstream = upstream.to_string();
        let seen2 = seen.clone();
        let host2 = host.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (rule, upstream, seen) = (rule.clone(), upstream.clone(), seen2.clone());
                let proxy = host2.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &proxy, &*rule, &seen);
                });
            }
        });
        FaultProxy { host, seen }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    proxy: &str,
    rule: &Rule,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            // A streamed body: read it whole below and forward it with a Content-Length.
            chunked = true;
            continue;
        }
        if lower.starts_with("authorization:") {
            authorization = Some(line["authorization:".len()..].trim().to_string());
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push(line);
    }
    let mut first = head[0].split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let fault = rule(&Request {
        method: method.clone(),
        path: path.clone(),
        authorization,
        proxy: proxy.into(),
        body_len: (!chunked).then_some(content_length),
    });
    seen.lock()
        .unwrap()
        .push(format!("{method} {path} -> {fault:?}"));
    if let Fault::StallBody(d) = fault {
        std::thread::sleep(d);
        return client.shutdown(Shutdown::Both);
    }
    if fault == Fault::ResetMidBody {
        let mut half = vec![0; content_length / 2];
        reader.read_exact(&mut half)?;
        return client.shutdown(Shutdown::Both);
    }
    let body = if chunked {
        let body = read_chunked(&mut reader)?;
        head.retain(|h| !h.to_ascii_lowercase().starts_with("content-length:"));
        head.push(format!("Content-Length: {}\r\n", body.len()));
        body
    } else {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        body
    };
    let canned = match &fault {
        Fault::Respond(status, headers) => Some((status, headers, "")),
        Fault::RespondBody(status, headers, body) => Some((status, headers, body.as_str())),
        _ => None,
    };
    if let Some((status, headers, body)) = canned {
        let mut resp = format!(
            "HTTP/1.1 {status} Fault\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(body);
        client.write_all(resp.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = head.concat();
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    match fault {
        Fault::DropResponse => return client.shutdown(Shutdown::Both),
        Fault::Stall(d) => std::thread::sleep(d),
        Fault::CorruptBody => {
            let body_start = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(resp.len());
            if resp.len() > body_start {
                let last = resp.len() - 1;
                resp[last] ^= 0xff;
            }
        }
        _ => {}
    }
    client.write_all(&resp)?;
    client.shutdown(Shutdown::Both)
}

/// Reads an HTTP/1.1 chunked body (without trailers) into one buffer.
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

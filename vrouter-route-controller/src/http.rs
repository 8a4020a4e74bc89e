//! A minimal HTTP/1.0-style server for probes and scraping: `/healthz`, `/readyz`,
//! `/status` (JSON) and `/metrics` (Prometheus text). GET only, one request per connection;
//! that is all kubelet and Prometheus need, so no HTTP framework is pulled in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::status::Status;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, status: Arc<Mutex<Status>>, liveness: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let status = status.clone();
        tokio::spawn(async move {
            // A slow or silent client must not hold a task forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &status, liveness)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, status: &Mutex<Status>, liveness: Duration) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        len += n;
        if n == 0 || buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = route(method, path.split('?').next().unwrap_or(""), &status.lock().expect("status lock"), liveness);
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let resp =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

fn route(method: &str, path: &str, s: &Status, liveness: Duration) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "GET only\n".into());
    }
    match path {
        "/healthz" if s.live(liveness) => (200, TEXT, "ok\n".into()),
        "/healthz" => (503, TEXT, "reconcile loop stalled\n".into()),
        "/readyz" => match s.ready() {
            Ok(()) => (200, TEXT, "ready\n".into()),
            Err(why) => (503, TEXT, format!("{why}\n")),
        },
        "/status" => (200, "application/json", format!("{:#}\n", s.json())),
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", s.metrics()),
        _ => (404, TEXT, "not found: try /healthz /readyz /status /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_answer() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let status = Arc::new(Mutex::new(Status::default()));
            tokio::spawn(serve(listener, status, Duration::from_secs(60)));
            let get = |path: &'static str| async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            };
            assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
            let ready = get("/readyz").await;
            assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("no reconcile"), "{ready}");
            assert!(get("/metrics").await.contains("vrouter_reconciles_total{result=\"ok\"} 0"));
            assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        });
    }
}

//! Ports and the services' ops listener.

use std::net::TcpListener;

/// A port nothing listens on (bound, then released: almost surely still
/// free a moment later). For an address that must refuse connections (a
/// broker or a provider that is down), or a port a child process must take.
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// The `/metrics` text of an ops listener on `port` (127.0.0.1).
pub async fn metrics_text(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap_or_else(|e| panic!("GET {url} body: {e}"))
}

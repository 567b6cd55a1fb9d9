//! What both listeners (proxy and admin) share: an accept loop that survives running out
//! of file descriptors, and a watchdog that closes connections which send nothing.
//!
//! - [`accept`]: retries failed accepts after a short back-off, counting each failure;
//!   `EMFILE` never stops the loop and never makes it spin.
//! - [`Activity`], [`TimedIo`] and [`guard`]: a connection whose request head is not whole
//!   within `header_timeout` (from accept for the first, from its first byte for later
//!   ones), or that sits with no request in flight and no byte read for `idle_timeout`, is
//!   closed. (hyper's own header read timeout is turned off: it also runs while a
//!   kept-alive connection is idle, which would override `idle_timeout`.)
//!
//! - [`bind_shared`]: several listening sockets on one address (`SO_REUSEPORT`), one for
//!   each of the proxy's threads, among which the kernel spreads new connections.
//!
//! The IO here is the listener socket and the connection's reads; nothing is parsed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The open-files limits before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub soft_before: u64,
    /// The soft limit now (the hard limit if raising worked).
    pub soft: u64,
    /// The hard limit, which only a privileged process can raise.
    pub hard: u64,
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit: every
/// client, legacy and shadow connection is a descriptor, and the usual soft limit of
/// 1,024 is far below what a busy sidecar holds.
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let soft_before: u64 = limit.rlim_cur;
    let hard: u64 = limit.rlim_max;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `setrlimit` only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFiles { soft_before, soft: hard, hard })
}

/// Pause after a failed accept (out of descriptors and the like) before the next one:
/// long enough not to spin on a full descriptor table, short enough that clients who
/// arrive once a descriptor is free barely notice.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// How long a connection may take to send things, per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to the first whole request head; also hyper's read timeout for each
    /// later head once its first byte arrived.
    pub header_timeout: Duration,
    /// With no request in flight, how long a connection may stay silent before it is
    /// closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60) }
    }
}

/// Pending connections a listening socket queues (tokio's own default).
const BACKLOG: u32 = 1024;

/// `count` listening sockets on `address`, all with `SO_REUSEPORT`, so that each thread of
/// the proxy accepts on its own and the kernel spreads new connections among them. Port 0
/// is chosen once, by the first: the others bind the port it got. They are returned as
/// std sockets (non-blocking), to be registered on the runtime of the thread that uses each.
/// Called on a runtime.
///
/// A port some other socket holds is refused (`AddrInUse`), even one with `SO_REUSEPORT`
/// (another shadowdiff): the port is first bound alone, without it, then let go.
pub fn bind_shared(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if address.port() != 0 {
        drop(std::net::TcpListener::bind(address)?);
    }
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut address = address;
    for _ in 0..count.max(1) {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        // Registered here and deregistered at once: each thread registers its own.
        let listener = socket.listen(BACKLOG)?.into_std()?;
        address = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Accepts the next connection. A failed accept is counted in `errors`, logged (at warn
/// for the first of a burst, debug after) and retried after [`ACCEPT_BACKOFF`].
///
/// Cancel-safe: dropping the future loses no accepted connection.
pub async fn accept(listener: &TcpListener, errors: &AtomicU64) -> (TcpStream, SocketAddr) {
    let mut failures_in_a_row = 0u64;
    loop {
        match listener.accept().await {
            Ok(pair) => {
                if failures_in_a_row > 0 {
                    tracing::info!(failures = failures_in_a_row, "accepting again");
                }
                return pair;
            }
            Err(error) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if failures_in_a_row == 0 {
                    tracing::warn!(%error, "accept failed; retrying shortly");
                } else {
                    tracing::debug!(%error, "accept failed again");
                }
                failures_in_a_row += 1;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What a connection has been doing, for its watchdog. Shared between the connection's
/// IO (reads), its service (requests) and [`guard`].
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last read byte or finished request.
    last_ms: AtomicU64,
    /// Milliseconds from `opened` to the first byte of a head not yet whole, plus one
    /// (0: none in progress).
    head_started_ms: AtomicU64,
    /// Requests received so far.
    requests: AtomicU64,
    /// Requests whose response is not finished yet.
    busy: AtomicUsize,
    /// HTTP/2: bytes between requests are frames (pings, window updates), not the start of
    /// a head, so only the idle timeout applies between requests.
    multiplexed: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            multiplexed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived. With no request in flight they start the next head.
    fn read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0
            && self.requests.load(Ordering::Relaxed) > 0
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            let _ = self.head_started_ms.compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A request head arrived (over HTTP/2 when `multiplexed`); the connection counts as
    /// busy until the returned guard is dropped (keep it in the response body).
    pub fn request(self: &Arc<Self>, multiplexed: bool) -> Busy {
        if multiplexed {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// When the connection is due to be closed if nothing happens before; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: ConnectionLimits) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some(self.opened + limits.header_timeout);
        }
        let head_started = self.head_started_ms.load(Ordering::Relaxed);
        if head_started > 0 {
            return Some(self.opened + Duration::from_millis(head_started - 1) + limits.header_timeout);
        }
        Some(self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout)
    }
}

/// Marks one request in flight on its connection; dropping it ends the request.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket that tells its [`Activity`] about every byte read.
#[derive(Debug)]
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        TimedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Runs `connection` until it ends, or closes it (drops it) when [`Activity`] says it has
/// been silent past its limit. Returns `None` when it was closed that way.
pub async fn guard<F: Future>(connection: F, activity: Arc<Activity>, limits: ConnectionLimits) -> Option<F::Output> {
    tokio::pin!(connection);
    loop {
        // While a request is in flight nothing is due; look again after an idle period.
        let deadline = activity.deadline(limits);
        let wake = deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            output = &mut connection => return Some(output),
            () = tokio::time::sleep_until(wake.into()) => {
                if activity.deadline(limits).is_some_and(|due| due <= Instant::now()) {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits =
        ConnectionLimits { header_timeout: Duration::from_millis(100), idle_timeout: Duration::from_millis(300) };

    #[test]
    fn the_first_head_is_due_at_the_header_timeout_then_idle_counts() {
        let activity = Activity::new();
        assert_eq!(activity.deadline(LIMITS), Some(activity.opened + LIMITS.header_timeout));
        let busy = activity.request(false);
        assert_eq!(activity.deadline(LIMITS), None);
        drop(busy);
        let due = activity.deadline(LIMITS).expect("idle deadline");
        assert!(due >= activity.opened + LIMITS.idle_timeout, "{due:?}");
    }

    #[test]
    fn bytes_between_requests_start_a_head_over_http1_only() {
        let http1 = Activity::new();
        drop(http1.request(false));
        http1.read();
        let due = http1.deadline(LIMITS).expect("deadline");
        assert!(due <= Instant::now() + LIMITS.header_timeout, "a started head is due at the header timeout");

        let http2 = Activity::new();
        drop(http2.request(true));
        http2.read();
        let due = http2.deadline(LIMITS).expect("deadline");
        assert!(due > Instant::now() + LIMITS.header_timeout, "frames between HTTP/2 requests only count as activity");
    }

    #[tokio::test]
    async fn a_silent_connection_is_dropped_and_a_busy_one_is_not() {
        let silent = guard(std::future::pending::<()>(), Activity::new(), LIMITS).await;
        assert_eq!(silent, None);
        let activity = Activity::new();
        let busy = activity.request(false);
        let finished = guard(tokio::time::sleep(Duration::from_millis(500)), Arc::clone(&activity), LIMITS).await;
        assert_eq!(finished, Some(()));
        drop(busy);
    }
}

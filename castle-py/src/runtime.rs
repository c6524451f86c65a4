//! The one way Python waits for Castle: the work runs on one static tokio runtime
//! while the calling thread, detached from the GIL, waits for it. That thread also
//! delivers the run's events to the Python callback (so the executor never waits for
//! the GIL) and runs the signal handlers, turning Ctrl-C into the run's cancellation.

use std::future::Future;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use castle_core::engine::Cancel;
use castle_core::events::{Event, Events};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::errors::CastleError;

/// How often the waiting thread runs the signal handlers when nothing arrives.
const POLL: Duration = Duration::from_millis(100);

/// The reason a Ctrl-C gives the run; the journal and the report show it.
const INTERRUPTED: &str = "interrupted (Ctrl-C)";

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("castle")
        .enable_all()
        .build()
        .map_err(|e| CastleError::new_err(format!("cannot start the async runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

/// What the work sends to the waiting thread.
enum Message<T> {
    Event(Box<Event>),
    Done(T),
}

/// How a run may be steered from Python while it works.
#[derive(Default)]
pub(crate) struct Steering<'a, 'py> {
    /// The run's cancellation: Ctrl-C and a failing callback set it. Without it,
    /// Ctrl-C abandons the work and raises `KeyboardInterrupt`.
    pub cancel: Option<&'a Cancel>,
    /// Called with each event as a dict, on the calling thread.
    pub on_event: Option<&'a Bound<'py, PyAny>>,
}

/// Runs `work` (given the events sink to hand to the run) and waits for it with the
/// GIL released.
///
/// A first Ctrl-C cancels the run, which stops at its next safe point and returns
/// normally (its error says it was cancelled); a second one, or one during work that
/// cannot be cancelled, stops the work where it is and raises `KeyboardInterrupt`.
/// If `on_event` raises, the run is cancelled and that exception is raised.
pub(crate) fn block_on<T, F>(
    py: Python<'_>,
    steering: Steering<'_, '_>,
    work: impl FnOnce(Events) -> F,
) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let loads = match steering.on_event {
        Some(_) => Some(py.import("json")?.getattr("loads")?),
        None => None,
    };
    let (tx, mut rx) = mpsc::channel::<Message<T>>();
    let mut events = Events::new();
    if steering.on_event.is_some() {
        let tx = tx.clone();
        events.push(Arc::new(move |e: &Event| {
            // The receiver is gone only once the caller stopped waiting.
            let _ = tx.send(Message::Event(Box::new(e.clone())));
        }));
    }
    let work = work(events);
    let handle = runtime()?.spawn(async move {
        let _ = tx.send(Message::Done(work.await));
    });
    let mut interrupted = false;
    let mut callback_error: Option<PyErr> = None;
    loop {
        let (got, back) = py.detach(move || (rx.recv_timeout(POLL), rx));
        rx = back;
        match got {
            Ok(Message::Done(value)) => {
                return match callback_error {
                    Some(err) => Err(err),
                    None => Ok(value),
                };
            }
            Ok(Message::Event(event)) => {
                if let (Some(cb), Some(loads), None) = (steering.on_event, &loads, &callback_error)
                {
                    let delivered = serde_json::to_string(&event)
                        .map_err(|e| CastleError::new_err(e.to_string()))
                        .and_then(|text| loads.call1((text,)))
                        .and_then(|dict| cb.call1((dict,)));
                    match delivered {
                        Ok(_) => {}
                        // Ctrl-C while the callback ran: the same as Ctrl-C while waiting.
                        Err(err) if err.is_instance_of::<PyKeyboardInterrupt>(py) => {
                            if !interrupt(steering.cancel, &mut interrupted) {
                                handle.abort();
                                return Err(err);
                            }
                        }
                        Err(err) => {
                            if let Some(cancel) = steering.cancel {
                                cancel.cancel("the on_event callback raised an exception");
                            }
                            callback_error = Some(err);
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CastleError::new_err(
                    "the work stopped without an answer (a panic in Castle; please report it)",
                ));
            }
        }
        if let Err(err) = py.check_signals()
            && !interrupt(steering.cancel, &mut interrupted)
        {
            handle.abort();
            return Err(err);
        }
    }
}

/// Turns a first Ctrl-C into the run's cancellation; false when there is nothing
/// left to cancel gently (no run, or already cancelled), so the caller stops hard.
fn interrupt(cancel: Option<&Cancel>, interrupted: &mut bool) -> bool {
    match cancel {
        Some(cancel) if !*interrupted => {
            cancel.cancel(INTERRUPTED);
            *interrupted = true;
            true
        }
        _ => false,
    }
}

/// Waits for work that needs neither events nor cancellation.
pub(crate) fn wait<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    block_on(py, Steering::default(), |_| work)
}

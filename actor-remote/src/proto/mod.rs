//! The wire protocol as a deterministic state machine.
//!
//! - [`frame`]: frames, their encoding, and [`FrameReader`] which cuts a byte
//!   stream into frames with the size limit checked before any allocation.
//! - [`Session`]: one connection's protocol state: handshake, heartbeats,
//!   ask correlation and deadlines, close.
//!
//! # Driving a session
//! Inputs are `handle_*` methods that take the current time; outputs are
//! `poll_*` methods. After any input, a driver:
//! 1. writes everything [`Session::poll_transmit`] returns, in order;
//! 2. handles every [`Session::poll_event`];
//! 3. arms a timer for [`Session::poll_timeout`] and calls
//!    [`Session::handle_timeout`] when it fires.
//!
//! The session never reads a clock, so tests drive two sessions against each
//! other with a virtual one (see the tests in `session.rs`).

pub mod frame;
pub mod session;

pub use frame::{CloseCode, FailureCode, Frame, FrameError, FrameReader, TellRef};
pub use session::{AskFailure, Event, Offer, Peer, SendError, Session, SessionConfig};

//! The wire formats: each delimits frames and translates them to and from
//! the pipeline. `iso`: ISO 8583 (terminals and gateways); `frames`: the
//! internal frames (the virtual terminal and back offices), with
//! `terminal_frames` for terminals at run time, `merchant_frames` for a
//! merchant's own settings and `webhook_frames` for webhooks. Nothing else
//! knows either format; the connection loop is `crate::net`'s.

pub(crate) mod frames;
pub(crate) mod iso;
mod merchant_frames;
mod terminal_frames;
pub(crate) mod webhook_frames;

//! Internal binary frames (see `docs/internal-frames.md`).

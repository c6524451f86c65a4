//! Castle's engine.

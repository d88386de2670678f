//! Placeholder until this step is written.

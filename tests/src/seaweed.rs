//! Placeholder: written with its step.

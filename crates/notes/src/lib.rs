//! Note generators for phivault.

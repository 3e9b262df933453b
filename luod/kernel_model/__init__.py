"""Emulated kernel-side data models for luod."""

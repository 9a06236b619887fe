"""sweep-engine: declarative scaling-law sweeps for language transfer."""

__version__ = "0.1.0"

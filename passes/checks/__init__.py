"""Checks that run models and measure them: parity, output comparison, validation and its gate, bench."""

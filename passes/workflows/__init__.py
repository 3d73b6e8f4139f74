"""One plain function per command; workflows never print and never exit."""

"""placeholder"""
def micro_cli() -> None:
    """placeholder"""

"""What every entry script does with bad input: one line on stderr, exit status 2."""
import sys


def run_cli(main, argv=None) -> int:
    from utils.errors import UserError

    try:
        return main(argv) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""`python -m demo` (`make demo`): the walk-through of a day at an infusion centre."""

from demo.walkthrough import main

if __name__ == "__main__":
    raise SystemExit(main())

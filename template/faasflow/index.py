"""faasflow template entry point: serves function/handler.py's flow behind the of-watchdog."""

from faasflow.runtime.template import main

if __name__ == "__main__":
    raise SystemExit(main())

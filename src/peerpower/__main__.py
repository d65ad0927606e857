from peerpower.cli import main

raise SystemExit(main())

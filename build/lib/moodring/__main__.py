from moodring.cli import main

raise SystemExit(main())

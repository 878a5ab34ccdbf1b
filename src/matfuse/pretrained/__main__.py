"""``python -m matfuse.pretrained export ...`` (see :func:`matfuse.pretrained.export`)."""

from matfuse.pretrained import main

raise SystemExit(main())

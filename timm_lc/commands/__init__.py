"""Every console command of ``timm-lc``: one module each, with ``build_parser()`` and ``main(argv)``.

``timm_lc.cli`` imports a command's module only when it runs and parses its arguments before the
library loads, so a module imports nothing heavy at its top (torch, timm, the hub code: inside
``main``) and ``timm-lc COMMAND --help`` answers at once. Library modules hold no argparse;
these modules hold no library logic.
"""

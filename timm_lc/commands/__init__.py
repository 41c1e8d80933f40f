"""Every console command of ``timm-lc``: one module each, with ``build_parser()`` and ``main(argv)``.

``timm_lc.cli`` imports a command's module only when it runs, so ``timm-lc --help`` stays fast.
Library modules hold no argparse; these modules hold no library logic.
"""

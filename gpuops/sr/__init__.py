"""Super-resolution library: MATLAB-compatible bicubic resizing, colour conversion, metrics,
patch data, SR models (SRCNN, FSRCNN, ESPCN, VDSR) and evaluation.

Pure library code: it returns data or raises; it never prints. numpy is imported at module level
here, torch only inside the functions and classes that need it, because the CLI imports these
modules only inside command functions.
"""

"""A tiny pure-Python package shipped with the example so requirements.txt installs offline."""

__version__ = '1.0.0'


def banner(version):
    return 'sitebanner %s: release %s' % (__version__, version)

# The `gunicorn` console script alone, over a gunicorn the system provides (Debian's python3-gunicorn, seen by a
# virtualenv made with --system-site-packages): pip writes <venv>/bin/gunicorn as `pip install gunicorn` would,
# so the example starts Gunicorn exactly as the README tells users to. With PyPI, put `gunicorn` in
# requirements.txt instead.
from setuptools import setup

setup(
    name='gunicorn-script',
    version='1.0.0',
    py_modules=[],
    entry_points={'console_scripts': ['gunicorn = gunicorn.app.wsgiapp:run']},
    python_requires='>=3.6',
)

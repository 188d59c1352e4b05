from setuptools import setup

setup(name='sitebanner', version='1.0.0', packages=['sitebanner'], python_requires='>=3.6')

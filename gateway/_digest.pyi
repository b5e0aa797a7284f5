# The compiled twin (_ext/digest.pyx) has the API of the Python class in gateway/sip/digest.py.
from gateway.sip.digest import PythonDigestClient as DigestClient

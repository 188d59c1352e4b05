from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render

from .models import Greeting

try:  # optional dependency from requirements.txt (a wheel shipped in vendor/)
    from sitebanner import banner
except ImportError:  # e.g. a virtualenv made without installing requirements.txt
    banner = None


def index(request):
    greeting = Greeting.objects.first()
    context = {
        'version': settings.APP_VERSION,
        'greeting': greeting.text if greeting else 'Hello (no greeting in the database)',
        'banner': banner(settings.APP_VERSION) if banner else '',
    }
    return render(request, 'pages/index.html', context)


def health(request):
    return HttpResponse('ok', content_type='text/plain')


def version(request):
    return HttpResponse(settings.APP_VERSION, content_type='text/plain')

from django.conf import settings
from django.test import TestCase

from .models import Greeting


class PagesTests(TestCase):
    def test_index_shows_version_greeting_and_css(self):
        response = self.client.get('/')
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, '<span id="version">%s</span>' % settings.APP_VERSION, html=False)
        self.assertContains(response, 'Hello from the example project')
        self.assertContains(response, '/static/pages/site.css')

    def test_health(self):
        response = self.client.get('/health/')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b'ok')

    def test_version(self):
        response = self.client.get('/version/')
        self.assertEqual(response.content.decode(), settings.APP_VERSION)

    def test_greeting_str_and_order(self):
        Greeting.objects.create(text='second')
        self.assertEqual(str(Greeting.objects.last()), 'second')
        self.assertEqual(Greeting.objects.first().text, 'Hello from the example project')

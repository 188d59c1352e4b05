from django.db import models


class Greeting(models.Model):
    """A line of text shown on the home page; the first one (by id) is used."""

    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ['id']

    def __str__(self):
        return self.text

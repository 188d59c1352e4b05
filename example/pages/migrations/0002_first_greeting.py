from django.db import migrations


def add_greeting(apps, schema_editor):
    Greeting = apps.get_model('pages', 'Greeting')
    if not Greeting.objects.exists():
        Greeting.objects.create(text='Hello from the example project')


def remove_greeting(apps, schema_editor):
    Greeting = apps.get_model('pages', 'Greeting')
    Greeting.objects.filter(text='Hello from the example project').delete()


class Migration(migrations.Migration):

    dependencies = [('pages', '0001_initial')]

    operations = [migrations.RunPython(add_greeting, remove_greeting)]

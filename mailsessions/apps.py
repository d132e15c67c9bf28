from django.apps import AppConfig


class MailSessionsConfig(AppConfig):
    name = "mailsessions"
    verbose_name = "Mail Sessions"

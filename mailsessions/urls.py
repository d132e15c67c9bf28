from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from mailsessions import health, views
from mailsessions.auth import RateLimitedLoginView
from mailsessions.wizard import MailSessionWizard

app_patterns = [
    path("", views.session_list, name="session-list"),
    path("new/", MailSessionWizard.as_view(), name="session-create"),
    path("<int:pk>/", views.session_detail, name="session-detail"),
    path("<int:pk>/edit/", MailSessionWizard.as_view(), name="session-edit"),
    path("<int:pk>/delete/", views.session_delete, name="session-delete"),
    path("<int:pk>/test/<str:kind>/", views.session_test, name="session-test"),
    path("tests/<uuid:test_id>/", views.test_status, name="test-status"),
    path("<int:pk>/operations/new/<str:kind>/", views.operation_create, name="operation-create"),
    path("operations/<int:pk>/", views.operation_detail, name="operation-detail"),
    path("operations/<int:pk>/edit/", views.operation_edit, name="operation-edit"),
    path("operations/<int:pk>/delete/", views.operation_delete, name="operation-delete"),
    path("operations/<int:pk>/run/", views.operation_run, name="operation-run"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("<int:pk>/messages/", views.message_list, name="message-list"),
    path("messages/<int:pk>/", views.message_detail, name="message-detail"),
    path("messages/<int:pk>/raw/", views.message_raw, name="message-raw"),
    path("attachments/<int:pk>/", views.attachment_download, name="attachment-download"),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="mailsessions:session-list", permanent=False)),
    path("sessions/", include((app_patterns, "mailsessions"))),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
]

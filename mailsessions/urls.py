from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from mailsessions import views
from mailsessions.wizard import MailSessionWizard

app_patterns = [
    path("", views.session_list, name="session-list"),
    path("new/", MailSessionWizard.as_view(), name="session-create"),
    path("<int:pk>/", views.session_detail, name="session-detail"),
    path("<int:pk>/edit/", MailSessionWizard.as_view(), name="session-edit"),
    path("<int:pk>/delete/", views.session_delete, name="session-delete"),
    path("<int:pk>/test/<str:kind>/", views.session_test, name="session-test"),
    path("tests/<uuid:test_id>/", views.test_status, name="test-status"),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="mailsessions:session-list", permanent=False)),
    path("sessions/", include((app_patterns, "mailsessions"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

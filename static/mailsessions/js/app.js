// Small progressive enhancements: port defaults, conditional fields and the
// connection-test buttons. Every page works without it.
(function () {
  "use strict";

  function byName(form, name) {
    return form.querySelector('[name$="-' + name + '"]:not([type=hidden]), [name="' + name + '"]:not([type=hidden])');
  }
  function checkedValue(form, name) {
    var el = form.querySelector('[name$="-' + name + '"]:checked');
    return el ? el.value : "";
  }
  function fieldBox(form, name) {
    return form.querySelector('[data-field="' + name + '"]');
  }
  function toggle(form, name, show) {
    var box = fieldBox(form, name);
    if (box) box.classList.toggle("hidden", !show);
  }

  function portFollower(form, portName, protocolOf, encryptionName) {
    var port = byName(form, portName);
    if (!port) return;
    var defaults = JSON.parse(port.dataset.defaultPorts || "{}");
    function wanted() { return defaults[protocolOf() + ":" + checkedValue(form, encryptionName)]; }
    // Follow protocol and encryption until the user types a port of their own.
    var touched = port.value !== "" && String(port.value) !== String(wanted());
    port.addEventListener("input", function () { touched = port.value !== ""; });
    function update() {
      var w = wanted();
      if (!touched && w) port.value = w;
    }
    form.addEventListener("change", function (e) { if (e.target !== port) update(); });
    update();
  }

  function incoming(form) {
    portFollower(form, "in_port", function () { return checkedValue(form, "in_protocol"); }, "in_encryption");
    function refresh() {
      var ews = checkedValue(form, "in_protocol") === "ews";
      ["ews_endpoint", "ews_auth_type", "ews_email"].forEach(function (n) { toggle(form, n, ews); });
      toggle(form, "in_allow_plaintext", checkedValue(form, "in_encryption") === "none");
    }
    form.addEventListener("change", refresh);
    refresh();
  }

  function outgoing(form) {
    portFollower(form, "out_port", function () { return "smtp"; }, "out_encryption");
    var different = byName(form, "out_use_different_credentials");
    var noAuth = byName(form, "out_no_auth");
    var sendOnly = !different; // hidden for send-only sessions: the SMTP account is the only one
    var viaEws = byName(form, "out_via_ews");
    function refresh() {
      var own = sendOnly || (different && different.checked);
      var none = noAuth && noAuth.checked;
      var ews = viaEws && viaEws.checked;
      ["out_host", "out_port", "out_encryption", "out_verify_certificate", "out_use_different_credentials", "out_no_auth"].forEach(function (n) { toggle(form, n, !ews); });
      toggle(form, "out_username", !ews && (own || none));
      toggle(form, "out_password", !ews && own && !none);
      toggle(form, "out_allow_plaintext", !ews && checkedValue(form, "out_encryption") === "none");
    }
    form.addEventListener("change", refresh);
    refresh();
  }

  function renderStages(target, data) {
    target.textContent = "";
    var head = document.createElement("p");
    head.className = "test-summary " + (data.status || "");
    head.textContent = data.summary || (data.done ? "" : "Running…");
    if (!data.done) head.classList.add("pending");
    target.appendChild(head);
    var list = document.createElement("ol");
    list.className = "stages";
    (data.stages || []).forEach(function (s) {
      var li = document.createElement("li");
      li.className = "stage " + s.outcome;
      li.dataset.stage = s.name;
      var name = document.createElement("span"); name.className = "stage-name"; name.textContent = s.title;
      var outcome = document.createElement("span"); outcome.className = "stage-outcome"; outcome.textContent = " " + s.outcome;
      li.appendChild(name); li.appendChild(outcome);
      if (s.duration_ms !== null && s.duration_ms !== undefined) {
        var t = document.createElement("span"); t.className = "stage-time"; t.textContent = " " + s.duration_ms + " ms"; li.appendChild(t);
      }
      var msg = document.createElement("div"); msg.className = "stage-message"; msg.textContent = s.message; li.appendChild(msg);
      list.appendChild(li);
    });
    target.appendChild(list);
  }

  function csrf() {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // A warm worker finishes a test against a quick server in ~100 ms: ask
  // often for the first 2 s, then back off so slow servers cost few requests.
  function poll(url, target, button, started) {
    started = started || Date.now();
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        renderStages(target, data);
        if (data.done) { button.disabled = false; }
        else {
          var delay = Date.now() - started < 2000 ? 100 : 500;
          setTimeout(function () { poll(url, target, button, started); }, delay);
        }
      })
      .catch(function () { target.textContent = "Lost contact with the server; reload the page to see the result."; button.disabled = false; });
  }

  function testButtons(panel) {
    var target = panel.querySelector("[data-test-result]");
    panel.querySelectorAll("[data-test-action]").forEach(function (b) {
      b.addEventListener("click", function () {
        var form = b.closest("form");
        var body = form ? new FormData(form) : new FormData();
        body.set("wizard_test", b.dataset.testKind);
        b.disabled = true;
        target.textContent = "Queued…";
        // A new test replaces the stored result shown above the buttons.
        var last = document.querySelector("[data-last-test]");
        if (last) last.classList.add("hidden");
        fetch(b.dataset.testAction, {
          method: "POST", body: body, credentials: "same-origin",
          headers: { "X-CSRFToken": csrf(), "Accept": "application/json" }
        }).then(function (r) { return r.json().then(function (d) { return { ok: r.ok, data: d }; }); })
          .then(function (res) {
            if (!res.ok) {
              b.disabled = false;
              target.textContent = "";
              var p = document.createElement("p"); p.className = "errors"; p.setAttribute("role", "alert");
              var errs = res.data.errors || {};
              p.textContent = res.data.error || Object.keys(errs).map(function (k) { return errs[k].join(" "); }).join(" ");
              target.appendChild(p);
              return;
            }
            poll(res.data.status_url, target, b);
          })
          .catch(function () { b.disabled = false; target.textContent = "The test could not be started."; });
      });
    });
  }

  // A run page reloads itself once the run is done, so counts and stored
  // messages appear without the user pressing anything.
  function pollRun(url) {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var badge = document.querySelector("[data-run-status]");
        if (badge) { badge.textContent = data.status_label; badge.dataset.runStatus = data.status; }
        if (data.done) { window.location.reload(); }
        else { setTimeout(function () { pollRun(url); }, 700); }
      })
      .catch(function () { setTimeout(function () { pollRun(url); }, 3000); });
  }

  // Operation forms: show a field only when the choice it belongs to is made.
  function operationForm(form) {
    function value(name) {
      var checked = form.querySelector('[name="' + name + '"]:checked');
      if (checked) return checked.value;
      var el = form.querySelector('select[name="' + name + '"]');
      return el ? el.value : "";
    }
    function refresh() {
      var schedule = value("schedule_kind");
      toggle(form, "every_minutes", schedule === "interval");
      ["cron_minute", "cron_hour", "cron_day_of_month", "cron_month_of_year", "cron_day_of_week"].forEach(function (n) {
        toggle(form, n, schedule === "crontab");
      });
      toggle(form, "schedule_enabled", schedule !== "none");
      toggle(form, "move_to", value("after_read") === "move");
      var action = value("set_action");
      toggle(form, "target_folder", action === "move" || action === "copy");
      toggle(form, "create_folder", action === "move" || action === "copy");
      var ref = value("reference_mode");
      toggle(form, "reference_message", ref !== "" && ref !== "none");
    }
    form.addEventListener("change", refresh);
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var opForm = document.querySelector("[data-operation-form]");
    if (opForm) operationForm(opForm);
    var form = document.querySelector("[data-wizard-form]");
    if (form) {
      var step = form.closest("[data-step]").dataset.step;
      if (step === "incoming") incoming(form);
      if (step === "outgoing") outgoing(form);
    }
    document.querySelectorAll("[data-test-panel]").forEach(testButtons);
    var runBox = document.querySelector("[data-run-poll]");
    if (runBox && runBox.dataset.runPoll) pollRun(runBox.dataset.runPoll);
  });
})();

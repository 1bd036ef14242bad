"""Message templates per topic and channel (Jinja2).

Every topic has an email subject, a text part, an HTML part (autoescaped) and an SMS text. The
SMS context is stripped of product, brand, reason and free-text fields before rendering, so no
template (shipped or overridden) can put a drug name or a diagnosis on a phone's lock screen.
Templates may be overridden per name from a directory (NOTIFY_TEMPLATE_DIR) or a mapping.

A template that cannot render a payload (a required field missing, a syntax error, an undefined
name) raises ``RenderError`` naming the field, and Publish answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import meta, nodes

from services.notify.domain.model import Channel, Topic
from services.notify.domain.sms import fit_sms

# Never offered to SMS templates (patient privacy: no drug or brand names, no clinical text).
SMS_HIDDEN = frozenset(
    {
        "brand",
        "product_brand",
        "product_code",
        "product_id",
        "reason",
        "cause",
        "message",
        "recipients",
        "patient_name",
        "diagnosis",
        "indication",
    }
)


class RenderError(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _required(value: Any, name: str) -> Any:
    if value in (None, "", 0) or value == []:
        raise _Missing(name)
    return value


def _day(value: dt.date | None) -> str:
    return "" if value is None else value.strftime("%a %d %b %Y")


def _when(value: dt.datetime | None, zone: str) -> str:
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(zone))
    return local.strftime("%a %d %b %Y %H:%M ") + (local.tzname() or "")


_LAYOUT = """<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ self.title() }}</h2>
{% block body %}{% endblock %}
<p style="color:#666">Sent to {{ subscriber.display_name }} by the infusion platform.</p>
</body></html>"""


def _defaults() -> dict[str, str]:
    t: dict[str, str] = {"_layout.html": _LAYOUT}

    def add(topic: Topic, subject: str, text: str, html_body: str, sms: str) -> None:
        name = topic.value
        t[f"{name}/email_subject.txt"] = subject
        t[f"{name}/email_text.txt"] = text
        t[f"{name}/email.html"] = (
            '{% extends "_layout.html" %}{% block title %}' + subject + "{% endblock %}"
            "{% block body %}" + html_body + "{% endblock %}"
        )
        t[f"{name}/sms.txt"] = sms

    add(
        Topic.INFUSION_DUE,
        "An infusion is due{% if p.patient_name %} for {{ p.patient_name }}{% endif %}",
        "An infusion is due by {{ p.due_date | required('due_date') | day }}"
        " (window {{ p.window_opens | day }} to {{ p.window_closes | day }}) and nothing is"
        " booked yet.\nPatient: {{ p.patient_id | required('patient_id') }}"
        "\nSite: {{ p.site_id }}\n",
        "<p>An infusion is due by <b>{{ p.due_date | day }}</b> (window {{ p.window_opens | day"
        " }} to {{ p.window_closes | day }}) and nothing is booked yet.</p>"
        "<p>Patient: {{ p.patient_id }}<br>Site: {{ p.site_id }}</p>",
        "Your next treatment is due by {{ p.due_date | required('due_date') | day }}."
        " Please contact your clinic to book it.",
    )
    for topic, lead in (
        (Topic.APPOINTMENT_REMINDER, "Reminder: your appointment"),
        (Topic.MISSED_INFUSION, "We missed you at your appointment"),
    ):
        add(
            topic,
            lead + " on {{ p.start_time | required('start_time') | when(zone) }}",
            lead + " at {{ p.site_name or p.site_id }} on"
            " {{ p.start_time | required('start_time') | when(zone) }}."
            "{% if p.get('product_brand') %}\nProduct: {{ p.product_brand }}{% endif %}\n",
            "<p>" + lead + " at <b>{{ p.site_name or p.site_id }}</b> on"
            " <b>{{ p.start_time | when(zone) }}</b>.</p>"
            "{% if p.get('product_brand') %}<p>Product: {{ p.product_brand }}</p>{% endif %}",
            (
                "Reminder: your appointment at {{ p.site_name or p.site_id }} is on"
                " {{ p.start_time | required('start_time') | when(zone) }}."
                " Reply or call the clinic to change it."
                if topic is Topic.APPOINTMENT_REMINDER
                else "You missed your appointment at {{ p.site_name or p.site_id }} on"
                " {{ p.start_time | required('start_time') | when(zone) }}."
                " Please call the clinic to rebook."
            ),
        )
    add(
        Topic.APPOINTMENT_CHANGED,
        "{% if p.cancelled %}Your appointment was cancelled{% else %}Your appointment moved to"
        " {{ p.start_time | required('start_time') | when(zone) }}{% endif %}",
        "{% if p.cancelled %}Your appointment at {{ p.site_name or p.site_id }}"
        "{% if p.previous_start_time %} on {{ p.previous_start_time | when(zone) }}{% endif %}"
        " was cancelled.{% else %}Your appointment at {{ p.site_name or p.site_id }} is now on"
        " {{ p.start_time | required('start_time') | when(zone) }}"
        "{% if p.previous_start_time %} (was {{ p.previous_start_time | when(zone) }})"
        "{% endif %}.{% endif %}\n",
        "<p>{% if p.cancelled %}Your appointment at {{ p.site_name or p.site_id }} was"
        " cancelled.{% else %}Your appointment at {{ p.site_name or p.site_id }} is now on"
        " <b>{{ p.start_time | when(zone) }}</b>.{% endif %}</p>",
        "{% if p.cancelled %}Your appointment at {{ p.site_name or p.site_id }} was cancelled."
        "{% else %}Your appointment at {{ p.site_name or p.site_id }} is now on"
        " {{ p.start_time | required('start_time') | when(zone) }}.{% endif %}",
    )
    add(
        Topic.OUTCOME_REVIEW_DUE,
        "An outcome review is due{% if p.patient_name %} for {{ p.patient_name }}{% endif %}",
        "The outcome review of therapy plan {{ p.therapy_plan_id | required('therapy_plan_id') }}"
        " is due by {{ p.due_date | required('due_date') | day }}: record the decision"
        " (continue, adjust, trial reduction or stop) with its reason."
        "\nPatient: {{ p.patient_id | required('patient_id') }}\nSite: {{ p.site_id }}\n",
        "<p>The outcome review of therapy plan {{ p.therapy_plan_id }} is due by"
        " <b>{{ p.due_date | day }}</b>: record the decision (continue, adjust, trial reduction"
        " or stop) with its reason.</p><p>Patient: {{ p.patient_id }}<br>Site: {{ p.site_id }}</p>",
        "A treatment review is due by {{ p.due_date | required('due_date') | day }}."
        " See the clinic system for details.",
    )
    add(
        Topic.REORDER_DUE,
        "Reorder {{ p.brand or p.product_code }} at {{ p.site_id | required('site_id') }}",
        "Reorder {{ p.vials }} x {{ p.presentation_grams }} g of"
        " {{ (p.brand or p.product_code) | required('product_code') }}"
        " ({{ p.grams }} g) for {{ p.site_id }}"
        "{% if p.order_by_date %}, order by {{ p.order_by_date | day }}{% endif %}."
        "{% if p.stockout_date %}\nProjected stock-out: {{ p.stockout_date | day }}.{% endif %}"
        "{% if p.estimated_cost %}\nEstimated cost: {{ p.estimated_cost }}.{% endif %}"
        "{% if p.reason %}\n{{ p.reason }}{% endif %}\n",
        "<p>Reorder <b>{{ p.vials }} &times; {{ p.presentation_grams }} g</b> of"
        " {{ p.brand or p.product_code }} ({{ p.grams }} g) for {{ p.site_id }}"
        "{% if p.order_by_date %}, order by <b>{{ p.order_by_date | day }}</b>{% endif %}.</p>"
        "{% if p.estimated_cost %}<p>Estimated cost: {{ p.estimated_cost }}</p>{% endif %}"
        "{% if p.reason %}<p>{{ p.reason }}</p>{% endif %}",
        "Stock reorder due at {{ p.site_id | required('site_id') }}"
        "{% if p.order_by_date %}, order by {{ p.order_by_date | day }}{% endif %}."
        " See the pharmacy system for details.",
    )
    add(
        Topic.LOW_STOCK,
        "Low stock: {{ p.brand or p.product_code }} at {{ p.site_id | required('site_id') }}",
        "{{ (p.brand or p.product_code) | required('product_code') }} at {{ p.site_id }}:"
        " {{ p.available_grams }} g available in date, below the safety stock of"
        " {{ p.safety_stock_grams }} g (as of {{ p.as_of | day }}).\n",
        "<p><b>{{ p.brand or p.product_code }}</b> at {{ p.site_id }}: {{ p.available_grams }} g"
        " available in date, below the safety stock of {{ p.safety_stock_grams }} g.</p>",
        "Low stock alert at {{ p.site_id | required('site_id') }}."
        " See the pharmacy system for details.",
    )
    add(
        Topic.LOT_EXPIRING,
        "Lot {{ p.lot_number | required('lot_number') }} expires in {{ p.days_left }} days",
        "Lot {{ p.lot_number | required('lot_number') }} at {{ p.site_id }} expires on"
        " {{ p.expiry_date | required('expiry_date') | day }} ({{ p.days_left }} days):"
        " {{ p.on_hand_vials }} vials on hand, {{ p.reserved_vials }} reserved.\n",
        "<p>Lot <b>{{ p.lot_number }}</b> at {{ p.site_id }} expires on"
        " <b>{{ p.expiry_date | day }}</b> ({{ p.days_left }} days):"
        " {{ p.on_hand_vials }} vials on hand, {{ p.reserved_vials }} reserved.</p>",
        "Stock lot {{ p.lot_number | required('lot_number') }} at {{ p.site_id }} expires"
        " {{ p.expiry_date | required('expiry_date') | day }}.",
    )
    add(
        Topic.LOT_RECALLED,
        "RECALL: {{ p.brand }} lot {{ p.lot_number | required('lot_number') }}",
        "{{ p.brand }} lot {{ p.lot_number | required('lot_number') }} is recalled."
        "{% if p.reason %}\nReason: {{ p.reason }}{% endif %}"
        "\nSites holding it: {{ p.sites | join(', ') }}"
        "\nPatients who received it: {{ p.recipients | length }}"
        "{% for r in p.recipients %}\n- {{ r.patient_id }} at {{ r.site_id }}"
        " ({{ r.grams }} g){% endfor %}\n",
        "<p><b>{{ p.brand }} lot {{ p.lot_number }} is recalled.</b></p>"
        "{% if p.reason %}<p>Reason: {{ p.reason }}</p>{% endif %}"
        "<p>Sites holding it: {{ p.sites | join(', ') }}</p>"
        "<p>Patients who received it: {{ p.recipients | length }}</p>"
        "<ul>{% for r in p.recipients %}<li>{{ r.patient_id }} at {{ r.site_id }}"
        " ({{ r.grams }} g)</li>{% endfor %}</ul>",
        "URGENT: stock lot {{ p.lot_number | required('lot_number') }} is recalled."
        " Quarantine it now and see the pharmacy system.",
    )
    add(
        Topic.STOCK_AT_RISK,
        "Stock at risk for an infusion on {{ p.needed_on | required('needed_on') | day }}",
        "The stock reserved for appointment {{ p.appointment_id }} on"
        " {{ p.needed_on | required('needed_on') | day }} at {{ p.site_id }} ({{ p.grams }} g)"
        " cannot be covered.{% if p.reason %}\n{{ p.reason }}{% endif %}\n",
        "<p>The stock reserved for appointment {{ p.appointment_id }} on"
        " <b>{{ p.needed_on | day }}</b> at {{ p.site_id }} ({{ p.grams }} g) cannot be"
        " covered.</p>{% if p.reason %}<p>{{ p.reason }}</p>{% endif %}",
        "URGENT: stock for an infusion on {{ p.needed_on | required('needed_on') | day }} at"
        " {{ p.site_id }} is at risk. See the pharmacy system.",
    )
    add(
        Topic.AUTHORISATION_EXPIRING,
        "An authorisation ends on {{ p.valid_to | required('valid_to') | day }}"
        "{% if p.patient_name %} for {{ p.patient_name }}{% endif %}",
        "The {{ p.payer }} authorisation of plan {{ p.therapy_plan_id }} ends on"
        " {{ p.valid_to | required('valid_to') | day }} ({{ p.days_left }} days): ask for the"
        " renewal.\nPatient: {{ p.patient_id | required('patient_id') }}\nSite: {{ p.site_id }}\n",
        "<p>The {{ p.payer }} authorisation of plan {{ p.therapy_plan_id }} ends on"
        " <b>{{ p.valid_to | day }}</b> ({{ p.days_left }} days): ask for the renewal.</p>"
        "<p>Patient: {{ p.patient_id }}<br>Site: {{ p.site_id }}</p>",
        "The authorisation for your treatment ends on"
        " {{ p.valid_to | required('valid_to') | day }}. Your clinic is asking for its renewal.",
    )
    # never sent (a stream-only signal: Topic.signal); rendered at Publish like every topic's,
    # so a payload without its ids is refused there
    add(
        Topic.BOARD_CHANGED,
        "The board of {{ p.site_id | required('site_id') }} changed",
        "Appointment {{ p.appointment_id | required('appointment_id') }} at {{ p.site_id }}"
        " is now {{ p.status }}.\n",
        "<p>Appointment {{ p.appointment_id }} at {{ p.site_id }} is now {{ p.status }}.</p>",
        "The board of {{ p.site_id | required('site_id') }} changed.",
    )
    return t


DEFAULT_TEMPLATES = _defaults()

# What a template may read besides the payload: what makes one recipient's text differ from
# another's.
_PER_RECIPIENT = frozenset({"zone", "subscriber"})

Memo = dict[tuple[str, str, str], str]
"""Texts rendered for one payload, by template and the recipient values it reads."""


class Templates:
    def __init__(
        self, overrides: Mapping[str, str] | None = None, directory: str | None = None
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if directory:
            loaders.append(jinja2.FileSystemLoader(directory))
        if overrides:
            loaders.append(jinja2.DictLoader(dict(overrides)))
        loaders.append(jinja2.DictLoader(DEFAULT_TEMPLATES))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self.env.filters["required"] = _required
        self.env.filters["day"] = _day
        self.env.filters["when"] = _when
        # per template name: the compiled template seen, and which of _PER_RECIPIENT it reads
        self._reads: dict[str, tuple[jinja2.Template, frozenset[str]]] = {}

    def render(
        self,
        topic: Topic,
        channel: Channel,
        payload: Mapping[str, Any],
        *,
        payload_field: str,
        zone: str,
        display_name: str,
        memo: Memo | None = None,
    ) -> Rendered:
        """What one delivery sends. ``payload_field`` prefixes the field named in errors.

        ``memo``, one per payload (a Publish's): a template that reads neither the zone nor the
        subscriber renders to the same text for every recipient, so it is rendered once and
        the text reused (Publish renders each template once to check the payload, then again
        per recipient and channel); one that reads them, once per zone and name it is given."""
        base = {"zone": zone, "subscriber": {"display_name": display_name}}

        def text(name: str, context: Mapping[str, Any]) -> str:
            template = self._get(topic, name)
            if memo is None:
                return template.render(context)
            reads = self._reads_of(template, f"{topic.value}/{name}")
            key = (
                f"{topic.value}/{name}",
                zone if "zone" in reads else "",
                display_name if "subscriber" in reads else "",
            )
            if key not in memo:
                memo[key] = template.render(context)
            return memo[key]

        try:
            if channel is Channel.SMS:
                safe = {k: v for k, v in payload.items() if k not in SMS_HIDDEN}
                return Rendered("", fit_sms(text("sms.txt", {"p": safe, **base})), "")
            context = {"p": dict(payload), **base}
            subject = " ".join(text("email_subject.txt", context).split())
            body = text("email_text.txt", context)
            if channel is Channel.EMAIL:
                return Rendered(subject, body, text("email.html", context))
            return Rendered(subject, body, "")
        except _Missing as missing:
            raise RenderError(
                f"{payload_field}.{missing.name}",
                f"is required by the {topic.value} {channel.value.lower()} template",
            ) from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError) as error:
            raise RenderError(
                payload_field,
                f"the {topic.value} {channel.value.lower()} template failed to render: {error}",
            ) from None

    def _get(self, topic: Topic, name: str) -> jinja2.Template:
        return self.env.get_template(f"{topic.value}/{name}")

    def _reads_of(self, template: jinja2.Template, name: str) -> frozenset[str]:
        """Which of the zone and the subscriber ``template`` reads, found in its source once
        per compiled template (a template reloaded from the directory is looked at again).
        One that extends, includes or imports another is taken to read both."""
        seen = self._reads.get(name)
        if seen is not None and seen[0] is template:
            return seen[1]
        assert self.env.loader is not None
        parsed = self.env.parse(self.env.loader.get_source(self.env, name)[0])
        if any(parsed.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
            reads = _PER_RECIPIENT
        else:
            reads = frozenset(meta.find_undeclared_variables(parsed)) & _PER_RECIPIENT
        self._reads[name] = (template, reads)
        return reads

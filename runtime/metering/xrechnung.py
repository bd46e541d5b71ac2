"""A statement as an XRechnung 3.0 e-invoice in UBL 2.1 syntax, for the municipality's
e-invoicing inbox: the Leitweg-ID is the buyer reference (BT-10), the statement's lines
are invoice lines, VAT is added at one rate.

The platform operator's own details (the seller) are configuration; the municipality's
address and Leitweg-ID come from whoever bills it. Validated in the tests with the Mustang
project's validator (EN 16931 and XRechnung 3.0 schematron).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from .ledger import month_range, BILLING_ZONE
from .prices import CENT
from .statements import Statement

UBL = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
# Leitweg-ID: Grobadressierung (2 to 12 digits), optional Feinadressierung, two check digits
# (their value is not verified here).
LEITWEG_ID = re.compile(r"^[0-9]{2,12}(-[0-9A-Z]{1,30})?-[0-9]{2}$")
METER_NAMES = {"readings_ingested": "Messwerte empfangen", "rows_stored": "Messwerte gespeichert",
               "dead_lettered": "Abgewiesene Datensätze", "api_queries": "API-Abfragen",
               "api_rows_read": "Gelesene Zeilen (API)", "api_bytes_read": "Übertragene Bytes (API)"}

ET.register_namespace("", UBL)
ET.register_namespace("cac", CAC)
ET.register_namespace("cbc", CBC)


@dataclass(frozen=True)
class Address:
    street: str
    postal_code: str
    city: str
    country: str = "DE"


@dataclass(frozen=True)
class Seller:
    name: str
    address: Address
    vat_id: str                 # USt-IdNr., e.g. DE123456789
    contact_name: str
    contact_phone: str
    contact_email: str
    electronic_address: str     # where the buyer's answers go (BT-34, e-mail)
    iban: str
    bank_name: str = ""


@dataclass(frozen=True)
class Buyer:
    name: str
    address: Address
    leitweg_id: str
    electronic_address: str     # BT-49, e-mail of the invoice inbox


def _el(parent, ns: str, name: str, text: str | None = None, **attrs) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ns}}}{name}", attrs)
    if text is not None:
        element.text = text
    return element


def _money(parent, name: str, amount: Decimal, currency: str) -> ET.Element:
    return _el(parent, CBC, name, f"{amount.quantize(CENT)}", currencyID=currency)


def _address(parent, address: Address) -> None:
    postal = _el(parent, CAC, "PostalAddress")
    _el(postal, CBC, "StreetName", address.street)
    _el(postal, CBC, "CityName", address.city)
    _el(postal, CBC, "PostalZone", address.postal_code)
    _el(_el(postal, CAC, "Country"), CBC, "IdentificationCode", address.country)


def _tax_category(parent, name: str, percent: Decimal) -> None:
    category = _el(parent, CAC, name)
    _el(category, CBC, "ID", "S")
    _el(category, CBC, "Percent", f"{percent.normalize():f}")
    _el(_el(category, CAC, "TaxScheme"), CBC, "ID", "VAT")


def _line_name(statement: Statement, line) -> str:
    if line.kind == "base":
        return f"Grundgebühr Tarif {statement.plan}, {line.month}"
    name = METER_NAMES.get(line.meter, line.meter)
    if line.kind == "adjustment":
        return f"Nachberechnung {line.month}: {name}"
    return f"{name}, {line.month}"


def _line_description(line) -> str:
    if line.kind == "base":
        return "Monatliche Grundgebühr"
    return (f"verbraucht {line.used} {line.unit}, inklusive {line.included}, berechnet {line.billable} "
            f"zu {line.unit_price} EUR je {line.per}")


def to_xrechnung(statement: Statement, *, seller: Seller, buyer: Buyer, invoice_number: str, issue_date: date,
                 vat_percent: Decimal = Decimal("19"), payment_days: int = 30) -> bytes:
    """The statement as an XRechnung 3.0 UBL invoice (UTF-8 bytes). Refuses what no valid
    invoice can be made of: no or a malformed Leitweg-ID, a total below zero (a credit note)."""
    if not buyer.leitweg_id or not LEITWEG_ID.match(buyer.leitweg_id):
        raise ValueError(f"the buyer's Leitweg-ID is missing or malformed ({buyer.leitweg_id!r}); it looks like "
                         "05754008-12345-67 and is required as the buyer reference of an XRechnung")
    if statement.total < 0:
        raise ValueError("the statement's total is below zero; that needs a credit note, not an invoice")
    currency = statement.currency
    root = ET.Element(f"{{{UBL}}}Invoice")
    _el(root, CBC, "CustomizationID", CUSTOMIZATION)
    _el(root, CBC, "ProfileID", PROFILE)
    _el(root, CBC, "ID", invoice_number)
    _el(root, CBC, "IssueDate", issue_date.isoformat())
    _el(root, CBC, "DueDate", (issue_date + timedelta(days=payment_days)).isoformat())
    _el(root, CBC, "InvoiceTypeCode", "380")
    _el(root, CBC, "Note", f"Nutzungsabrechnung {statement.month} (Abrechnung {statement.hash or 'Entwurf'})")
    _el(root, CBC, "DocumentCurrencyCode", currency)
    _el(root, CBC, "BuyerReference", buyer.leitweg_id)
    start, end = month_range(date.fromisoformat(f"{statement.month}-01"))
    period = _el(root, CAC, "InvoicePeriod")
    _el(period, CBC, "StartDate", start.astimezone(BILLING_ZONE).date().isoformat())
    _el(period, CBC, "EndDate", (end.astimezone(BILLING_ZONE).date() - timedelta(days=1)).isoformat())

    party = _el(_el(root, CAC, "AccountingSupplierParty"), CAC, "Party")
    _el(party, CBC, "EndpointID", seller.electronic_address, schemeID="EM")
    _el(_el(party, CAC, "PartyName"), CBC, "Name", seller.name)
    _address(party, seller.address)
    tax = _el(party, CAC, "PartyTaxScheme")
    _el(tax, CBC, "CompanyID", seller.vat_id)
    _el(_el(tax, CAC, "TaxScheme"), CBC, "ID", "VAT")
    _el(_el(party, CAC, "PartyLegalEntity"), CBC, "RegistrationName", seller.name)
    contact = _el(party, CAC, "Contact")
    _el(contact, CBC, "Name", seller.contact_name)
    _el(contact, CBC, "Telephone", seller.contact_phone)
    _el(contact, CBC, "ElectronicMail", seller.contact_email)

    party = _el(_el(root, CAC, "AccountingCustomerParty"), CAC, "Party")
    _el(party, CBC, "EndpointID", buyer.electronic_address, schemeID="EM")
    _address(party, buyer.address)
    _el(_el(party, CAC, "PartyLegalEntity"), CBC, "RegistrationName", buyer.name)

    means = _el(root, CAC, "PaymentMeans")
    _el(means, CBC, "PaymentMeansCode", "58")   # SEPA credit transfer
    _el(means, CBC, "PaymentID", invoice_number)
    account = _el(means, CAC, "PayeeFinancialAccount")
    _el(account, CBC, "ID", seller.iban)
    if seller.bank_name:
        _el(account, CBC, "Name", seller.bank_name)
    _el(_el(root, CAC, "PaymentTerms"), CBC, "Note", f"Zahlbar innerhalb von {payment_days} Tagen ohne Abzug.")

    net = sum((line.amount for line in statement.lines), Decimal("0")).quantize(CENT)
    vat = (net * vat_percent / Decimal(100)).quantize(CENT, ROUND_HALF_UP)
    tax_total = _el(root, CAC, "TaxTotal")
    _money(tax_total, "TaxAmount", vat, currency)
    subtotal = _el(tax_total, CAC, "TaxSubtotal")
    _money(subtotal, "TaxableAmount", net, currency)
    _money(subtotal, "TaxAmount", vat, currency)
    _tax_category(subtotal, "TaxCategory", vat_percent)
    totals = _el(root, CAC, "LegalMonetaryTotal")
    _money(totals, "LineExtensionAmount", net, currency)
    _money(totals, "TaxExclusiveAmount", net, currency)
    _money(totals, "TaxInclusiveAmount", net + vat, currency)
    _money(totals, "PayableAmount", net + vat, currency)

    for number, line in enumerate(statement.lines, start=1):
        element = _el(root, CAC, "InvoiceLine")
        _el(element, CBC, "ID", str(number))
        # Prices may not be negative (BR-27): a credit adjustment is a quantity of −1.
        quantity = "-1" if line.amount < 0 else "1"
        _el(element, CBC, "InvoicedQuantity", quantity, unitCode="C62")
        _money(element, "LineExtensionAmount", line.amount, currency)
        item = _el(element, CAC, "Item")
        _el(item, CBC, "Description", _line_description(line))
        _el(item, CBC, "Name", _line_name(statement, line))
        _tax_category(item, "ClassifiedTaxCategory", vat_percent)
        _money(_el(element, CAC, "Price"), "PriceAmount", abs(line.amount), currency)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)

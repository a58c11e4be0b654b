"""Receipt documents: HTML from a Jinja2 template, PDF from that HTML (weasyprint).

Rendered by the ``receipt_pdf`` delivery channel (``sender.ReceiptDocumentSender``)
after the receipt's transaction, never inside one: the PDF is stored in
``ledger_receipt_documents`` for the gateway to serve.
"""

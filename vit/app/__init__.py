"""The Gradio app's logic, testable without a browser: what each event and endpoint does (`handlers`, `api`),
the page's layout (`page`) and what it shows (`ui`), the Inside the ViT and Explorer tabs (`inside_tab`,
`explorer_tab` and `explorer_view`), its words in English and Japanese (`i18n`), files in and out of Gradio
(`gradio_io`) and the example photos (`examples`, `python -m vit.app.examples`). app.py only wires widgets to
these."""

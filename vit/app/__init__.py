"""The Gradio app's logic, testable without a browser: what each event and endpoint does (`handlers`),
what the page shows (`ui`), files in and out of Gradio (`gradio_io`) and the example photos
(`examples`, `python -m vit.app.examples`). app.py only wires widgets to these."""

"""The Gradio app's parts (imports gradio; the library does not): the shared context and the tabs.

``app.py`` assembles them: :func:`dferclip.ui.context.build_model_bar`, then
:func:`dferclip.ui.predict.build_predict_tab` and the description workbench's ``dferclip.ui.descriptions_tab.build_workbench_tab``.
"""

"""Azure Functions entry point: builds the app and registers one blueprint per trigger family."""

import azure.functions as func

from functions.bootstrap import bp as bootstrap_bp
from functions.fleet import bp as fleet_bp
from functions.notifications import bp as notifications_bp
from functions.rotation import bp as rotation_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bootstrap_bp)
app.register_functions(fleet_bp)
app.register_functions(notifications_bp)
app.register_functions(rotation_bp)
